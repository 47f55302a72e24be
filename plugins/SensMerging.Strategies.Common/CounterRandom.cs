using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace SensMerging.Strategies.Common;

/// <summary>
/// A counter-based random stream: the value for element <c>i</c> of stream <c>seed</c> is a fixed hash (SplitMix64
/// finalizer) of both, so results do not depend on chunking, thread count or call order, and any element can be
/// computed on its own. 24-bit uniform values; a vector form computes eight consecutive elements at once (same values).
/// </summary>
public static class CounterRandom
{
    private const ulong Golden = 0x9E37_79B9_7F4A_7C15UL;
    private const ulong Mix1 = 0xBF58_476D_1CE4_E5B9UL;
    private const ulong Mix2 = 0x94D0_49BB_1331_11EBUL;

    /// <summary>The per-stream key for a seed (for example <c>request.Seed + modelIndex</c>).</summary>
    public static ulong StreamKey(long seed) => Mix(unchecked((ulong)seed) ^ 0x5EED_5EED_5EED_5EEDUL);

    /// <summary>A uniform integer in [0, 2^24) for element <paramref name="index"/> of the stream.</summary>
    public static uint Uniform24(ulong streamKey, long index) => (uint)(Mix(unchecked(streamKey + ((ulong)index + 1) * Golden)) >> 40);

    /// <summary>The threshold such that <c>Uniform24 &lt; threshold</c> has probability <paramref name="probability"/> (rounded to 2^-24).</summary>
    public static uint Threshold(double probability) => (uint)Math.Round(Math.Clamp(probability, 0, 1) * (1 << 24));

    /// <summary><see cref="Uniform24(ulong, long)"/> of elements <paramref name="index"/> to <paramref name="index"/> + 7, lane k for index + k.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<uint> Uniform24x8(ulong streamKey, long index)
    {
        var key = Vector256.Create(streamKey);
        var golden = Vector256.Create(Golden);
        var first = Vector256.Create(unchecked((ulong)index + 1)) + Vector256.Create(0UL, 1UL, 2UL, 3UL);
        var low = Mix(key + (first * golden)) >>> 40;
        var high = Mix(key + ((first + Vector256.Create(4UL)) * golden)) >>> 40;
        return Vector256.Narrow(low, high);
    }

    private static ulong Mix(ulong z)
    {
        unchecked
        {
            z = (z ^ (z >> 30)) * Mix1;
            z = (z ^ (z >> 27)) * Mix2;
            return z ^ (z >> 31);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<ulong> Mix(Vector256<ulong> z)
    {
        z = (z ^ (z >>> 30)) * Vector256.Create(Mix1);
        z = (z ^ (z >>> 27)) * Vector256.Create(Mix2);
        return z ^ (z >>> 31);
    }
}
