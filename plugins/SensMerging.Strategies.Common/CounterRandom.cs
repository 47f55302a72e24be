using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using TorchSharp;
using static TorchSharp.torch;

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
        // key + (index + 1 + k) * golden: one scalar product, then the lanes' k * golden added (wrapping, as ulong).
        var start = Vector256.Create(unchecked(streamKey + (((ulong)index + 1) * Golden)));
        var low = Mix(start + unchecked(Vector256.Create(0UL, Golden, 2 * Golden, 3 * Golden))) >>> 40;
        var high = Mix(start + unchecked(Vector256.Create(4 * Golden, 5 * Golden, 6 * Golden, 7 * Golden))) >>> 40;
        return Vector256.Narrow(low, high);
    }

    /// <summary><see cref="Uniform24(ulong, long)"/> of elements <paramref name="index"/> to <paramref name="index"/> + 15, lane k for index + k (AVX-512).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<uint> Uniform24x16(ulong streamKey, long index)
    {
        var start = Vector512.Create(unchecked(streamKey + (((ulong)index + 1) * Golden)));
        var low = Mix(start + unchecked(Vector512.Create(0UL, Golden, 2 * Golden, 3 * Golden, 4 * Golden, 5 * Golden, 6 * Golden, 7 * Golden))) >>> 40;
        var high = Mix(start + unchecked(Vector512.Create(8 * Golden, 9 * Golden, 10 * Golden, 11 * Golden, 12 * Golden, 13 * Golden, 14 * Golden, 15 * Golden))) >>> 40;
        return Vector512.Narrow(low, high);
    }

    /// <summary>
    /// Writes into <paramref name="keep"/> (any dtype, any device, any layout) 1 where element
    /// <c>elementStart + k</c> (k the row-major position in the tensor) of the stream has
    /// <c>Uniform24 &lt; threshold</c>, else 0: the same values as <see cref="Uniform24(ulong, long)"/>, computed with
    /// int64 tensor ops on the tensor's own device (they wrap modulo 2^64 like ulong arithmetic).
    /// <paramref name="z"/> and <paramref name="t"/> are int64 scratch of <paramref name="keep"/>'s shape.
    /// </summary>
    public static void KeepMask(Tensor keep, long elementStart, ulong streamKey, uint threshold, Tensor z, Tensor t)
    {
        ArgumentNullException.ThrowIfNull(keep);
        ArgumentNullException.ThrowIfNull(z);
        ArgumentNullException.ThrowIfNull(t);
        using var scope = torch.NewDisposeScope();
        var n = keep.numel();
        using (var positions = torch.arange(elementStart + 1, elementStart + 1 + n, dtype: ScalarType.Int64, device: z.device))
        {
            z.copy_(positions.reshape(z.shape));
        }
        unchecked
        {
            z.mul_((long)Golden).add_((long)streamKey);
            ShiftXor(z, t, 30);
            z.mul_((long)Mix1);
            ShiftXor(z, t, 27);
            z.mul_((long)Mix2);
            ShiftXor(z, t, 31);
        }
        LogicalShiftRight(z, 40);
        keep.copy_(z.lt_((long)threshold));
    }

    // z ^= z >>> s
    private static void ShiftXor(Tensor z, Tensor t, int s) => z.bitwise_xor_(LogicalShiftRight(t.copy_(z), s));

    // libtorch's int64 right shift is arithmetic: mask away the copies of the sign bit.
    private static Tensor LogicalShiftRight(Tensor x, int s)
    {
        using var shift = torch.tensor((long)s, device: x.device);
        return x.bitwise_right_shift_(shift).bitwise_and_((long)((1UL << (64 - s)) - 1));
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
    private static Vector512<ulong> Mix(Vector512<ulong> z)
    {
        z = (z ^ (z >>> 30)) * Vector512.Create(Mix1);
        z = (z ^ (z >>> 27)) * Vector512.Create(Mix2);
        return z ^ (z >>> 31);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<ulong> Mix(Vector256<ulong> z)
    {
        z = (z ^ (z >>> 30)) * Vector256.Create(Mix1);
        z = (z ^ (z >>> 27)) * Vector256.Create(Mix2);
        return z ^ (z >>> 31);
    }
}
