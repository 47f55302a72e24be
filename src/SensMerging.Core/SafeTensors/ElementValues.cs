using System.Buffers.Binary;
using SensMerging.Abstractions;

namespace SensMerging.Core.SafeTensors;

/// <summary>
/// Single floating-point elements in their stored form: read as a double (exact for every supported dtype), written by
/// rounding once to the dtype (half types through float32, as PyTorch's casts do), and float32 values rounded to a dtype.
/// </summary>
internal static class ElementValues
{
    /// <summary>The element's value.</summary>
    public static double Read(SafeTensorsDType dtype, ReadOnlySpan<byte> element) =>
        dtype == SafeTensorsDType.F32 ? BinaryPrimitives.ReadSingleLittleEndian(element)
        : dtype == SafeTensorsDType.BF16 ? BFloat16Bits.ToSingle(BinaryPrimitives.ReadUInt16LittleEndian(element))
        : dtype == SafeTensorsDType.F16 ? (double)BinaryPrimitives.ReadHalfLittleEndian(element)
        : dtype == SafeTensorsDType.F64 ? BinaryPrimitives.ReadDoubleLittleEndian(element)
        : throw new NotSupportedException($"arithmetic on {dtype} values");

    /// <summary>Writes <paramref name="value"/> rounded to <paramref name="dtype"/>.</summary>
    public static void Write(SafeTensorsDType dtype, Span<byte> element, double value)
    {
        if (dtype == SafeTensorsDType.F32)
        {
            BinaryPrimitives.WriteSingleLittleEndian(element, (float)value);
        }
        else if (dtype == SafeTensorsDType.BF16)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(element, BFloat16Bits.FromSingle((float)value));
        }
        else if (dtype == SafeTensorsDType.F16)
        {
            BinaryPrimitives.WriteHalfLittleEndian(element, (Half)(float)value);
        }
        else if (dtype == SafeTensorsDType.F64)
        {
            BinaryPrimitives.WriteDoubleLittleEndian(element, value);
        }
        else
        {
            throw new NotSupportedException($"arithmetic on {dtype} values");
        }
    }

    /// <summary><paramref name="value"/> rounded to <paramref name="dtype"/> (F64 and F32 keep the float32 value).</summary>
    public static float Round(SafeTensorsDType dtype, float value) =>
        dtype == SafeTensorsDType.BF16 ? BFloat16Bits.ToSingle(BFloat16Bits.FromSingle(value))
        : dtype == SafeTensorsDType.F16 ? (float)(Half)value
        : value;
}
