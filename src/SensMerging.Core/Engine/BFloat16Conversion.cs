using System.Runtime.InteropServices;
using SensMerging.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Core.Engine;

/// <summary>
/// bfloat16 &lt;-&gt; float32 for contiguous CPU tensors in managed SIMD code (one pass, no libtorch dispatch), by the
/// contract's rule (<see cref="BFloat16Bits"/>: exact widening; rounding to nearest even, every NaN as 0xFFFF, as libtorch's
/// vectorized CPU conversion does; its scalar tail writes 0x7FC0, both are NaN), the rule strategies that take bfloat16
/// tensors round by too.
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
        BFloat16Bits.ToSingle(MemoryMarshal.Cast<byte, ushort>(source.bytes), MemoryMarshal.Cast<byte, float>(target.bytes));
        return true;
    }

    /// <summary>Converts <paramref name="source"/> (float32) into <paramref name="target"/> (bf16); false when either is not a contiguous CPU tensor of that dtype.</summary>
    public static bool TryFromSingle(Tensor source, Tensor target)
    {
        if (!Fits(source, ScalarType.Float32, target, ScalarType.BFloat16))
        {
            return false;
        }
        BFloat16Bits.FromSingle(MemoryMarshal.Cast<byte, float>(source.bytes), MemoryMarshal.Cast<byte, ushort>(target.bytes));
        return true;
    }

    private static bool Fits(Tensor source, ScalarType sourceType, Tensor target, ScalarType targetType) =>
        source.dtype == sourceType && target.dtype == targetType && source.device_type == DeviceType.CPU && target.device_type == DeviceType.CPU
        && source.is_contiguous() && target.is_contiguous() && source.numel() == target.numel() && source.numel() <= int.MaxValue / sizeof(float);
}
