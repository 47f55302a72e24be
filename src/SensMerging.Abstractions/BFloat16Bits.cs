using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace SensMerging.Abstractions;

/// <summary>
/// bfloat16 bit patterns to and from float32: the one rounding rule of the host's conversions and of strategies that
/// take bfloat16 tensors (<see cref="StrategyTraits.AcceptsBFloat16"/>). Widening is exact (a bfloat16 is the high
/// half of a float32); narrowing rounds to nearest, ties to even, and turns every NaN into <see cref="NaN"/>. The vector
/// and scalar forms give the same bits, so results do not depend on alignment or vector width.
/// </summary>
public static class BFloat16Bits
{
    /// <summary>The bit pattern every NaN narrows to (sign set, all exponent and mantissa bits set), as libtorch's vectorized CPU conversion writes it.</summary>
    public const ushort NaN = 0xFFFF;

    /// <summary>The float32 value of a bfloat16 bit pattern.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToSingle(ushort bits) => BitConverter.UInt32BitsToSingle((uint)bits << 16);

    /// <summary>The bfloat16 bit pattern nearest <paramref name="value"/> (ties to even; NaN as <see cref="NaN"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort FromSingle(float value)
    {
        var bits = BitConverter.SingleToUInt32Bits(value);
        return float.IsNaN(value) ? NaN : (ushort)((bits + ((bits >> 16) & 1) + 0x7FFF) >> 16);
    }

    /// <summary>Eight bfloat16 bit patterns as float32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Widen(Vector128<ushort> bits)
    {
        if (Avx2.IsSupported)
        {
            return Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32(bits), 16).AsSingle();
        }
        var (low, high) = Vector128.Widen(bits);
        return Vector256.Create(low << 16, high << 16).AsSingle();
    }

    /// <summary>Eight float32 values rounded to bfloat16 bit patterns (the rule of <see cref="FromSingle(float)"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<ushort> Narrow(Vector256<float> values)
    {
        var bits = values.AsUInt32();
        var rounded = (bits + ((bits >>> 16) & Vector256<uint>.One) + Vector256.Create(0x7FFFu)) >>> 16;
        var nan = ~Vector256.Equals(values, values).AsUInt32();
        rounded = Vector256.ConditionalSelect(nan, Vector256.Create((uint)NaN), rounded);
        // Every lane is at most 0xFFFF, so the saturating pack is exact.
        return Sse41.IsSupported
            ? Sse41.PackUnsignedSaturate(rounded.GetLower().AsInt32(), rounded.GetUpper().AsInt32())
            : Vector128.Narrow(rounded.GetLower(), rounded.GetUpper());
    }

    /// <summary>Widens <paramref name="source"/> into <paramref name="target"/> (at least as long).</summary>
    public static void ToSingle(ReadOnlySpan<ushort> source, Span<float> target)
    {
        if (target.Length < source.Length)
        {
            throw new ArgumentException($"target holds {target.Length} values, source has {source.Length}", nameof(target));
        }
        var i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i + Vector128<ushort>.Count <= source.Length; i += Vector128<ushort>.Count)
            {
                Widen(Vector128.Create(source[i..])).CopyTo(target[i..]);
            }
        }
        for (; i < source.Length; i++)
        {
            target[i] = ToSingle(source[i]);
        }
    }

    /// <summary>Rounds <paramref name="source"/> into <paramref name="target"/> (at least as long).</summary>
    public static void FromSingle(ReadOnlySpan<float> source, Span<ushort> target)
    {
        if (target.Length < source.Length)
        {
            throw new ArgumentException($"target holds {target.Length} values, source has {source.Length}", nameof(target));
        }
        var i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i + Vector256<float>.Count <= source.Length; i += Vector256<float>.Count)
            {
                Narrow(Vector256.Create(source[i..])).CopyTo(target[i..]);
            }
        }
        for (; i < source.Length; i++)
        {
            target[i] = FromSingle(source[i]);
        }
    }
}
