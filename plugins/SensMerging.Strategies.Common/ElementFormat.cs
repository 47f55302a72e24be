using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using SensMerging.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Strategies.Common;

/// <summary>
/// How the fused CPU kernels load and store elements of contiguous memory: every value is computed in float32 registers
/// whatever the storage. Implemented by structs and used as a generic argument, so the JIT compiles each kernel once per
/// format with the loads and stores inlined.
/// </summary>
internal unsafe interface IElementFormat
{
    /// <summary>Eight float32 values from elements <paramref name="e"/>..e+7 of <paramref name="p"/>.</summary>
    static abstract Vector256<float> Load(void* p, long e);

    /// <summary>Element <paramref name="e"/> of <paramref name="p"/> as float32.</summary>
    static abstract float LoadOne(void* p, long e);

    /// <summary>Stores eight float32 values at elements <paramref name="e"/>..e+7 of <paramref name="p"/>.</summary>
    static abstract void Store(Vector256<float> values, void* p, long e);

    /// <summary>Stores one float32 value at element <paramref name="e"/> of <paramref name="p"/>.</summary>
    static abstract void StoreOne(float value, void* p, long e);
}

/// <summary>float32 storage: loads and stores as they are.</summary>
internal readonly unsafe struct Float32Elements : IElementFormat
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load(void* p, long e) => Vector256.Load((float*)p + e);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float LoadOne(void* p, long e) => ((float*)p)[e];

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(Vector256<float> values, void* p, long e) => values.Store((float*)p + e);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void StoreOne(float value, void* p, long e) => ((float*)p)[e] = value;
}

/// <summary>bfloat16 storage: widened exactly on load, rounded once on store (<see cref="BFloat16Bits"/>).</summary>
internal readonly unsafe struct BFloat16Elements : IElementFormat
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load(void* p, long e) => BFloat16Bits.Widen(Vector128.Load((ushort*)p + e));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float LoadOne(void* p, long e) => BFloat16Bits.ToSingle(((ushort*)p)[e]);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(Vector256<float> values, void* p, long e) => BFloat16Bits.Narrow(values).Store((ushort*)p + e);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void StoreOne(float value, void* p, long e) => ((ushort*)p)[e] = BFloat16Bits.FromSingle(value);
}

/// <summary>Which <see cref="IElementFormat"/> a set of tensors can be read through in place.</summary>
internal enum StorageFormat
{
    /// <summary>Not readable in place (other dtype, device or layout, or mixed): copy into float32 first.</summary>
    None,

    /// <summary>Contiguous CPU float32.</summary>
    Float32,

    /// <summary>Contiguous CPU bfloat16.</summary>
    BFloat16,
}

/// <summary>Deciding the <see cref="StorageFormat"/> of tensors.</summary>
internal static class StorageFormats
{
    /// <summary>The format of one tensor (None for null).</summary>
    public static StorageFormat Of(Tensor? tensor) =>
        tensor is null || tensor.device_type != DeviceType.CPU || !tensor.is_contiguous() ? StorageFormat.None
        : tensor.dtype switch
        {
            ScalarType.Float32 => StorageFormat.Float32,
            ScalarType.BFloat16 => StorageFormat.BFloat16,
            _ => StorageFormat.None,
        };

    /// <summary>The format shared by every tensor given (all with <paramref name="numel"/> elements), else None.</summary>
    public static StorageFormat Common(long numel, Tensor? first, IEnumerable<Tensor> rest)
    {
        var format = Of(first);
        if (format == StorageFormat.None || first!.numel() != numel)
        {
            return StorageFormat.None;
        }
        foreach (var t in rest)
        {
            if (Of(t) != format || t.numel() != numel)
            {
                return StorageFormat.None;
            }
        }
        return format;
    }
}
