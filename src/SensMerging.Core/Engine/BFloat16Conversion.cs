using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Core.Engine;

/// <summary>
/// bfloat16 &lt;-&gt; float32 for contiguous CPU tensors in managed SIMD code (one pass, no libtorch dispatch): widening
/// is exact (bf16 is the high half of a float32); narrowing rounds to nearest even and turns every NaN into 0xFFFF,
/// as libtorch's vectorized CPU conversion does (its scalar tail writes 0x7FC0; both are NaN).
/// </summary>
internal static class BFloat16Conversion
{
    /// <summary>Converts <paramref name="source"/> (bf16) into <paramref name="target"/> (float32); false when either is not a contiguous CPU tensor of that dtype.</summary>
    public static bool TryToSingle(Tensor source, Tensor target)
    {
        if (!Fits(source, ScalarType.BFloat16, target, ScalarType.Float32))
        {
            return false;
        }
        ToSingle(MemoryMarshal.Cast<byte, ushort>(source.bytes), MemoryMarshal.Cast<byte, uint>(target.bytes));
        return true;
    }

    /// <summary>Converts <paramref name="source"/> (float32) into <paramref name="target"/> (bf16); false when either is not a contiguous CPU tensor of that dtype.</summary>
    public static bool TryFromSingle(Tensor source, Tensor target)
    {
        if (!Fits(source, ScalarType.Float32, target, ScalarType.BFloat16))
        {
            return false;
        }
        FromSingle(MemoryMarshal.Cast<byte, uint>(source.bytes), MemoryMarshal.Cast<byte, ushort>(target.bytes));
        return true;
    }

    public static void ToSingle(ReadOnlySpan<ushort> source, Span<uint> target)
    {
        var i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i + Vector256<ushort>.Count <= source.Length; i += Vector256<ushort>.Count)
            {
                var (low, high) = Vector256.Widen(Vector256.Create(source[i..]));
                (low << 16).CopyTo(target[i..]);
                (high << 16).CopyTo(target[(i + Vector256<uint>.Count)..]);
            }
        }
        for (; i < source.Length; i++)
        {
            target[i] = (uint)source[i] << 16;
        }
    }

    public static void FromSingle(ReadOnlySpan<uint> source, Span<ushort> target)
    {
        var i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i + Vector256<ushort>.Count <= source.Length; i += Vector256<ushort>.Count)
            {
                var low = Round(Vector256.Create(source[i..]));
                var high = Round(Vector256.Create(source[(i + Vector256<uint>.Count)..]));
                Vector256.Narrow(low, high).CopyTo(target[i..]);
            }
        }
        for (; i < source.Length; i++)
        {
            target[i] = Round(source[i]);
        }
    }

    private static Vector256<uint> Round(Vector256<uint> bits)
    {
        var rounded = (bits + ((bits >>> 16) & Vector256<uint>.One) + Vector256.Create(0x7FFFu)) >>> 16;
        var nan = ~Vector256.Equals(bits.AsSingle(), bits.AsSingle()).AsUInt32();
        return Vector256.ConditionalSelect(nan, Vector256.Create(0xFFFFu), rounded);
    }

    private static ushort Round(uint bits) =>
        float.IsNaN(BitConverter.UInt32BitsToSingle(bits)) ? (ushort)0xFFFF : (ushort)((bits + ((bits >> 16) & 1) + 0x7FFF) >> 16);

    private static bool Fits(Tensor source, ScalarType sourceType, Tensor target, ScalarType targetType) =>
        source.dtype == sourceType && target.dtype == targetType && source.device_type == DeviceType.CPU && target.device_type == DeviceType.CPU
        && source.is_contiguous() && target.is_contiguous() && source.numel() == target.numel() && source.numel() <= int.MaxValue / sizeof(float);
}
