using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using SensMerging.Abstractions;

namespace SensMerging.Strategies.Common;

/// <summary>
/// The float32 vector operations of <see cref="BFloat16TaskArithmetic"/>'s fused passes, at one vector width: eight lanes
/// (<see cref="FloatLanes8"/>, 256-bit) or sixteen (<see cref="FloatLanes16"/>, AVX-512). The passes are written once as
/// generic methods over this interface and compiled per width with every operation inlined; each lane computes the same
/// float32 operations in the same order at either width, so the bits do not depend on it.
/// </summary>
internal unsafe interface IFloatLanes<TSelf>
    where TSelf : unmanaged, IFloatLanes<TSelf>
{
    /// <summary>How many float32 lanes.</summary>
    static abstract int Count { get; }

    static abstract TSelf Zero { get; }

    static abstract TSelf Create(float value);

    /// <summary><see cref="Count"/> bfloat16 bit patterns from <paramref name="p"/>, widened (exact).</summary>
    static abstract TSelf LoadBFloat16(ushort* p);

    /// <summary>The lanes rounded to bfloat16 bit patterns by <see cref="BFloat16Bits.Narrow"/> (every NaN as <see cref="BFloat16Bits.NaN"/>) and stored at <paramref name="p"/>.</summary>
    static abstract void StoreBFloat16(TSelf values, ushort* p);

    /// <summary>
    /// The lanes rounded to bfloat16 (nearest, ties to even) and widened back. No NaN case: every NaN the fused passes meet
    /// has its low 16 bits clear (a widened bfloat16 input, a rounded value, or the default NaN 0xFFC00000 that inf - inf or
    /// 0 * inf gives; float32 arithmetic passes an operand NaN's payload on, quieted in its high half; the settings'
    /// constants are finite), and the rule leaves such a NaN a NaN; <see cref="StoreBFloat16"/> writes every NaN as
    /// <see cref="BFloat16Bits.NaN"/>.
    /// </summary>
    static abstract TSelf Round(TSelf values);

    static abstract TSelf Abs(TSelf values);

    static abstract TSelf operator +(TSelf left, TSelf right);

    static abstract TSelf operator -(TSelf left, TSelf right);

    static abstract TSelf operator *(TSelf left, TSelf right);

    static abstract TSelf operator /(TSelf left, TSelf right);

    /// <summary>All bits set in the lanes where <paramref name="left"/> &gt;= <paramref name="right"/> (false where either is NaN); the same for the comparisons below.</summary>
    static abstract TSelf GreaterThanOrEqual(TSelf left, TSelf right);

    static abstract TSelf LessThanOrEqual(TSelf left, TSelf right);

    static abstract TSelf GreaterThan(TSelf left, TSelf right);

    static abstract TSelf LessThan(TSelf left, TSelf right);

    static abstract TSelf Equal(TSelf left, TSelf right);

    /// <summary>Per bit: <paramref name="mask"/> ? <paramref name="whenTrue"/> : <paramref name="whenFalse"/>.</summary>
    static abstract TSelf Select(TSelf mask, TSelf whenTrue, TSelf whenFalse);

    /// <summary>All bits set in lane k where <see cref="CounterRandom.Uniform24"/>(<paramref name="key"/>, <paramref name="index"/> + k) &lt; <paramref name="threshold"/>.</summary>
    static abstract TSelf RandomKeep(ulong key, long index, uint threshold);

    /// <summary>Bit k set where lane k of <paramref name="mask"/> (a comparison's result: all bits set or none) is set.</summary>
    static abstract uint MaskBits(TSelf mask);

    /// <summary>The inverse of <see cref="MaskBits"/>: all bits set in lane k where bit k of <paramref name="bits"/> is set.</summary>
    static abstract TSelf MaskFromBits(uint bits);

    /// <summary>
    /// Stores at <paramref name="keys"/> each lane's 15-bit bfloat16 magnitude key (of a rounded value) plus the offset of
    /// its copy of the histogram's buckets: lane k counts into copy k mod <see cref="FloatLanes.HistogramCopies"/> (of
    /// <paramref name="bucketsPerCopy"/> buckets).
    /// </summary>
    static abstract void StoreMagnitudeKeys(TSelf rounded, uint* keys, uint bucketsPerCopy);

    /// <summary>
    /// Adds the lanes into eight float64 lanes keyed by position mod 8 (<see cref="PositionLanes"/>), lanes 0-3 into
    /// <paramref name="low"/> and 4-7 into <paramref name="high"/>; sixteen lanes add their first eight, then the next eight,
    /// so every float64 lane receives its elements in position order at either width.
    /// </summary>
    static abstract void AddByPosition(TSelf values, ref Vector256<double> low, ref Vector256<double> high);
}

/// <summary>Eight float32 lanes (256-bit vectors).</summary>
internal readonly unsafe struct FloatLanes8 : IFloatLanes<FloatLanes8>
{
    private readonly Vector256<float> _v;

    internal FloatLanes8(Vector256<float> v) => _v = v;

    public static int Count => 8;

    public static FloatLanes8 Zero => default;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FloatLanes8 Create(float value) => new(Vector256.Create(value));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FloatLanes8 LoadBFloat16(ushort* p) => new(BFloat16Bits.Widen(Vector128.Load(p)));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void StoreBFloat16(FloatLanes8 values, ushort* p) => BFloat16Bits.Narrow(values._v).Store(p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FloatLanes8 Round(FloatLanes8 values)
    {
        var bits = values._v.AsUInt32();
        return new(((bits + ((bits >>> 16) & Vector256<uint>.One) + Vector256.Create(0x7FFFu)) & Vector256.Create(0xFFFF_0000u)).AsSingle());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FloatLanes8 Abs(FloatLanes8 values) => new(Vector256.Abs(values._v));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FloatLanes8 operator +(FloatLanes8 left, FloatLanes8 right) => new(left._v + right._v);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FloatLanes8 operator -(FloatLanes8 left, FloatLanes8 right) => new(left._v - right._v);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FloatLanes8 operator *(FloatLanes8 left, FloatLanes8 right) => new(left._v * right._v);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FloatLanes8 operator /(FloatLanes8 left, FloatLanes8 right) => new(left._v / right._v);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FloatLanes8 GreaterThanOrEqual(FloatLanes8 left, FloatLanes8 right) => new(Vector256.GreaterThanOrEqual(left._v, right._v));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FloatLanes8 LessThanOrEqual(FloatLanes8 left, FloatLanes8 right) => new(Vector256.LessThanOrEqual(left._v, right._v));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FloatLanes8 GreaterThan(FloatLanes8 left, FloatLanes8 right) => new(Vector256.GreaterThan(left._v, right._v));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FloatLanes8 LessThan(FloatLanes8 left, FloatLanes8 right) => new(Vector256.LessThan(left._v, right._v));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FloatLanes8 Equal(FloatLanes8 left, FloatLanes8 right) => new(Vector256.Equals(left._v, right._v));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FloatLanes8 Select(FloatLanes8 mask, FloatLanes8 whenTrue, FloatLanes8 whenFalse) =>
        new(Vector256.ConditionalSelect(mask._v, whenTrue._v, whenFalse._v));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FloatLanes8 RandomKeep(ulong key, long index, uint threshold) =>
        new(Vector256.LessThan(CounterRandom.Uniform24x8(key, index), Vector256.Create(threshold)).AsSingle());

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint MaskBits(FloatLanes8 mask) => mask._v.ExtractMostSignificantBits();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FloatLanes8 MaskFromBits(uint bits) => new(Mask(bits));

    /// <summary><see cref="MaskFromBits"/> as a plain vector (the float32 kernel's lanes).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> Mask(uint bits)
    {
        var lanes = Vector256.Create(1u, 2u, 4u, 8u, 16u, 32u, 64u, 128u);
        return Vector256.Equals(Vector256.Create(bits) & lanes, lanes).AsSingle();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void StoreMagnitudeKeys(FloatLanes8 rounded, uint* keys, uint bucketsPerCopy)
    {
        var copies = (Vector256<uint>.Indices & Vector256.Create((uint)FloatLanes.HistogramCopies - 1)) * bucketsPerCopy;
        (((rounded._v.AsUInt32() >>> 16) & Vector256.Create(0x7FFFu)) + copies).Store(keys);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void AddByPosition(FloatLanes8 values, ref Vector256<double> low, ref Vector256<double> high)
    {
        var (first, second) = Vector256.Widen(values._v);
        low += first;
        high += second;
    }
}

/// <summary>Sixteen float32 lanes (AVX-512); use only where <see cref="Vector512.IsHardwareAccelerated"/>.</summary>
internal readonly unsafe struct FloatLanes16 : IFloatLanes<FloatLanes16>
{
    private readonly Vector512<float> _v;

    private FloatLanes16(Vector512<float> v) => _v = v;

    public static int Count => 16;

    public static FloatLanes16 Zero => default;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FloatLanes16 Create(float value) => new(Vector512.Create(value));

    /// <summary>Widening is exact: a bfloat16 is the high half of a float32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FloatLanes16 LoadBFloat16(ushort* p)
    {
        if (Avx512F.IsSupported)
        {
            return new(Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512UInt32(Vector256.Load(p)), 16).AsSingle());
        }
        var (low, high) = Vector256.Widen(Vector256.Load(p));
        return new(Vector512.Create(low << 16, high << 16).AsSingle());
    }

    /// <summary>Each half through <see cref="BFloat16Bits.Narrow"/>: the one rounding rule of the host's conversions.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void StoreBFloat16(FloatLanes16 values, ushort* p)
    {
        BFloat16Bits.Narrow(values._v.GetLower()).Store(p);
        BFloat16Bits.Narrow(values._v.GetUpper()).Store(p + 8);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FloatLanes16 Round(FloatLanes16 values)
    {
        var bits = values._v.AsUInt32();
        return new(((bits + ((bits >>> 16) & Vector512<uint>.One) + Vector512.Create(0x7FFFu)) & Vector512.Create(0xFFFF_0000u)).AsSingle());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FloatLanes16 Abs(FloatLanes16 values) => new(Vector512.Abs(values._v));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FloatLanes16 operator +(FloatLanes16 left, FloatLanes16 right) => new(left._v + right._v);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FloatLanes16 operator -(FloatLanes16 left, FloatLanes16 right) => new(left._v - right._v);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FloatLanes16 operator *(FloatLanes16 left, FloatLanes16 right) => new(left._v * right._v);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FloatLanes16 operator /(FloatLanes16 left, FloatLanes16 right) => new(left._v / right._v);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FloatLanes16 GreaterThanOrEqual(FloatLanes16 left, FloatLanes16 right) => new(Vector512.GreaterThanOrEqual(left._v, right._v));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FloatLanes16 LessThanOrEqual(FloatLanes16 left, FloatLanes16 right) => new(Vector512.LessThanOrEqual(left._v, right._v));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FloatLanes16 GreaterThan(FloatLanes16 left, FloatLanes16 right) => new(Vector512.GreaterThan(left._v, right._v));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FloatLanes16 LessThan(FloatLanes16 left, FloatLanes16 right) => new(Vector512.LessThan(left._v, right._v));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FloatLanes16 Equal(FloatLanes16 left, FloatLanes16 right) => new(Vector512.Equals(left._v, right._v));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FloatLanes16 Select(FloatLanes16 mask, FloatLanes16 whenTrue, FloatLanes16 whenFalse) =>
        new(Vector512.ConditionalSelect(mask._v, whenTrue._v, whenFalse._v));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FloatLanes16 RandomKeep(ulong key, long index, uint threshold) =>
        new(Vector512.LessThan(CounterRandom.Uniform24x16(key, index), Vector512.Create(threshold)).AsSingle());

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint MaskBits(FloatLanes16 mask) => (uint)mask._v.ExtractMostSignificantBits();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FloatLanes16 MaskFromBits(uint bits)
    {
        var lanes = Vector512.Create(1u, 2u, 4u, 8u, 16u, 32u, 64u, 128u, 256u, 512u, 1024u, 2048u, 4096u, 8192u, 16384u, 32768u);
        return new(Vector512.Equals(Vector512.Create(bits) & lanes, lanes).AsSingle());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void StoreMagnitudeKeys(FloatLanes16 rounded, uint* keys, uint bucketsPerCopy)
    {
        // As two eight-lane halves (lane k + 8 counts into the same copy as lane k): the scalar loads that follow are
        // forwarded from 256-bit stores (measured: a 512-bit store made the histogram pass a third slower on AMD Zen 4).
        FloatLanes8.StoreMagnitudeKeys(new FloatLanes8(rounded._v.GetLower()), keys, bucketsPerCopy);
        FloatLanes8.StoreMagnitudeKeys(new FloatLanes8(rounded._v.GetUpper()), keys + 8, bucketsPerCopy);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void AddByPosition(FloatLanes16 values, ref Vector256<double> low, ref Vector256<double> high)
    {
        FloatLanes8.AddByPosition(new FloatLanes8(values._v.GetLower()), ref low, ref high);
        FloatLanes8.AddByPosition(new FloatLanes8(values._v.GetUpper()), ref low, ref high);
    }
}

/// <summary>Which vector width the fused passes run at.</summary>
internal static class FloatLanes
{
    /// <summary>How many copies of its buckets a magnitude histogram counts into (<see cref="IFloatLanes{TSelf}.StoreMagnitudeKeys"/>; a power of two).</summary>
    public const int HistogramCopies = 4;

    /// <summary>Set on a thread (tests) to run the eight-lane passes where sixteen would be taken.</summary>
    [ThreadStatic]
    internal static bool EightOnly;

    /// <summary>True where the sixteen-lane passes run: AVX-512 and not <see cref="EightOnly"/>.</summary>
    public static bool Sixteen => Vector512.IsHardwareAccelerated && !EightOnly;
}
