using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Strategies.Common;

/// <summary>
/// The k-th smallest magnitude of a tensor's entries, exactly. For contiguous CPU tensors of float32, bfloat16 or
/// float16 it runs a radix select on the bit patterns (with the sign bit cleared, the bits of a float order like its
/// magnitude): two histogram passes over the data (float32: <see cref="MagnitudeRanks"/>), reading it in place, allocating nothing of
/// the tensor's size. Other tensors (GPU, other dtypes) use libtorch's <c>kthvalue</c> on a scratch copy of |x|.
/// </summary>
public static class MagnitudeSelect
{
    /// <summary>Elements per span (spans are limited to 2^31 bytes).</summary>
    private const long ChunkElements = 1L << 28;

    /// <summary>The <paramref name="k"/>-th smallest |x| (1-based) over all entries of <paramref name="values"/>.</summary>
    /// <param name="values">The tensor (not modified).</param>
    /// <param name="k">Rank, 1 to numel.</param>
    /// <param name="scratch">A tensor of the same shape and dtype, overwritten on the fallback path.</param>
    public static double KthSmallestMagnitude(Tensor values, long k, Tensor scratch)
    {
        ArgumentNullException.ThrowIfNull(values);
        ArgumentNullException.ThrowIfNull(scratch);
        var numel = values.numel();
        ArgumentOutOfRangeException.ThrowIfLessThan(k, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(k, numel);
        if (values.device_type == DeviceType.CPU && values.is_contiguous())
        {
            switch (values.dtype)
            {
                case ScalarType.Float32:
                    return BitConverter.UInt32BitsToSingle(Select32(values, k));
                case ScalarType.BFloat16:
                    return BitConverter.UInt32BitsToSingle((uint)Select16(values, k) << 16);
                case ScalarType.Float16:
                    return (double)BitConverter.UInt16BitsToHalf(Select16(values, k));
                default:
                    break;
            }
        }
        scratch.copy_(values).abs_();
        using var flat = scratch.reshape(-1);
        var (value, index) = flat.kthvalue(k, 0, false);
        using (value)
        using (index)
        {
            return value.ToDouble();
        }
    }

    private static unsafe uint Select32(Tensor values, long k)
    {
        var ranks = new MagnitudeRanks(values.numel(), k);
        var x = NativeSpans.Float32(values);
        while (!ranks.IsComplete)
        {
            ranks.Add(x, null, values.numel());
            ranks.EndPass();
        }
        return BitConverter.SingleToUInt32Bits(ranks.Value(0));
    }

    /// <summary>
    /// One pass: a half-precision magnitude is its 15 low bits, and their order as integers is the magnitudes' order
    /// (NaN patterns sort above infinity), so a histogram of all 32768 keys (256 KiB) gives the k-th exactly.
    /// </summary>
    private static ushort Select16(Tensor values, long k)
    {
        using var flat = values.reshape(-1);
        var remaining = k;
        var hist = RentHistogram();
        try
        {
            ForEachChunk(flat, span =>
            {
                foreach (var bits in MemoryMarshal.Cast<byte, ushort>(span))
                {
                    hist[bits & 0x7FFF]++;
                }
            });
            return (ushort)Find(hist.AsSpan(0, HalfKeys), ref remaining);
        }
        finally
        {
            ReturnHistogram(hist);
        }
    }

    /// <summary>The number of half-precision magnitude keys (15 bits).</summary>
    public const int HalfKeys = 1 << 15;

    /// <summary>
    /// A zeroed histogram of at least <paramref name="copies"/> x <see cref="HalfKeys"/> buckets from the shared pool
    /// (256 KiB a copy: renting it keeps small tensors from allocating one each); give it back with
    /// <see cref="ReturnHistogram"/>.
    /// </summary>
    public static long[] RentHistogram(int copies = 1)
    {
        var histogram = System.Buffers.ArrayPool<long>.Shared.Rent(copies * HalfKeys);
        Array.Clear(histogram, 0, copies * HalfKeys);
        return histogram;
    }

    /// <summary>Returns a histogram from <see cref="RentHistogram"/> to the pool.</summary>
    public static void ReturnHistogram(long[] histogram) => System.Buffers.ArrayPool<long>.Shared.Return(histogram);

    /// <summary>The bucket holding the <paramref name="remaining"/>-th entry; <paramref name="remaining"/> becomes the rank inside it.</summary>
    private static int Find(ReadOnlySpan<long> hist, ref long remaining)
    {
        for (var i = 0; i < hist.Length; i++)
        {
            if (remaining <= hist[i])
            {
                return i;
            }
            remaining -= hist[i];
        }
        throw new InvalidOperationException("radix select ran past the last bucket (the tensor changed while being read)");
    }

    private delegate void ChunkAction(Span<byte> bytes);

    private static void ForEachChunk(Tensor flat, ChunkAction action)
    {
        var numel = flat.numel();
        for (long start = 0; start < numel; start += ChunkElements)
        {
            using var part = flat.narrow(0, start, Math.Min(ChunkElements, numel - start));
            action(part.bytes);
        }
    }
}
