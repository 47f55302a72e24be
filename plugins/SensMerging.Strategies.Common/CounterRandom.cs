namespace SensMerging.Strategies.Common;

/// <summary>
/// A counter-based random stream: the value for element <c>i</c> of stream <c>seed</c> is a fixed hash (SplitMix64
/// finalizer) of both, so results do not depend on chunking, thread count or call order, and any element can be
/// computed on its own. 24-bit uniform values.
/// </summary>
public static class CounterRandom
{
    private const ulong Golden = 0x9E37_79B9_7F4A_7C15UL;

    /// <summary>The per-stream key for a seed (for example <c>request.Seed + modelIndex</c>).</summary>
    public static ulong StreamKey(long seed) => Mix(unchecked((ulong)seed) ^ 0x5EED_5EED_5EED_5EEDUL);

    /// <summary>A uniform integer in [0, 2^24) for element <paramref name="index"/> of the stream.</summary>
    public static uint Uniform24(ulong streamKey, long index) => (uint)(Mix(unchecked(streamKey + ((ulong)index + 1) * Golden)) >> 40);

    /// <summary>The threshold such that <c>Uniform24 &lt; threshold</c> has probability <paramref name="probability"/> (rounded to 2^-24).</summary>
    public static uint Threshold(double probability) => (uint)Math.Round(Math.Clamp(probability, 0, 1) * (1 << 24));

    private static ulong Mix(ulong z)
    {
        unchecked
        {
            z = (z ^ (z >> 30)) * 0xBF58_476D_1CE4_E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D0_49BB_1331_11EBUL;
            return z ^ (z >> 31);
        }
    }
}
