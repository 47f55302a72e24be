using System.Collections.Frozen;
using static TorchSharp.torch;

namespace SensMerging.Core.SafeTensors;

/// <summary>
/// A safetensors element type: its name in the header, its size in bytes and, where TorchSharp has it, the matching
/// <see cref="ScalarType"/>. This is the one table of dtypes in the host.
/// </summary>
public sealed class SafeTensorsDType
{
    private SafeTensorsDType(string name, int size, ScalarType? scalarType, bool isFloatingPoint, string? torchDtypeName)
    {
        Name = name;
        Size = size;
        ScalarType = scalarType;
        IsFloatingPoint = isFloatingPoint;
        TorchDtypeName = torchDtypeName;
    }

    /// <summary>The name in the safetensors header (for example <c>BF16</c>).</summary>
    public string Name { get; }

    /// <summary>Bytes per element.</summary>
    public int Size { get; }

    /// <summary>The TorchSharp element type, or null when TorchSharp has none (the bytes can still be copied through).</summary>
    public ScalarType? ScalarType { get; }

    /// <summary>True for the real floating-point types the engine merges (F16, BF16, F32, F64).</summary>
    public bool IsFloatingPoint { get; }

    /// <summary>The Hugging Face <c>torch_dtype</c> spelling (for example <c>bfloat16</c>), or null.</summary>
    public string? TorchDtypeName { get; }

    public static SafeTensorsDType Bool { get; } = new("BOOL", 1, TorchSharp.torch.ScalarType.Bool, false, "bool");
    public static SafeTensorsDType U8 { get; } = new("U8", 1, TorchSharp.torch.ScalarType.Byte, false, "uint8");
    public static SafeTensorsDType I8 { get; } = new("I8", 1, TorchSharp.torch.ScalarType.Int8, false, "int8");
    public static SafeTensorsDType F8E5M2 { get; } = new("F8_E5M2", 1, null, false, "float8_e5m2");
    public static SafeTensorsDType F8E4M3 { get; } = new("F8_E4M3", 1, null, false, "float8_e4m3fn");
    public static SafeTensorsDType I16 { get; } = new("I16", 2, TorchSharp.torch.ScalarType.Int16, false, "int16");
    public static SafeTensorsDType U16 { get; } = new("U16", 2, null, false, "uint16");
    public static SafeTensorsDType F16 { get; } = new("F16", 2, TorchSharp.torch.ScalarType.Float16, true, "float16");
    public static SafeTensorsDType BF16 { get; } = new("BF16", 2, TorchSharp.torch.ScalarType.BFloat16, true, "bfloat16");
    public static SafeTensorsDType I32 { get; } = new("I32", 4, TorchSharp.torch.ScalarType.Int32, false, "int32");
    public static SafeTensorsDType U32 { get; } = new("U32", 4, null, false, "uint32");
    public static SafeTensorsDType F32 { get; } = new("F32", 4, TorchSharp.torch.ScalarType.Float32, true, "float32");
    public static SafeTensorsDType I64 { get; } = new("I64", 8, TorchSharp.torch.ScalarType.Int64, false, "int64");
    public static SafeTensorsDType U64 { get; } = new("U64", 8, null, false, "uint64");
    public static SafeTensorsDType F64 { get; } = new("F64", 8, TorchSharp.torch.ScalarType.Float64, true, "float64");
    public static SafeTensorsDType C64 { get; } = new("C64", 8, TorchSharp.torch.ScalarType.ComplexFloat32, false, "complex64");

    /// <summary>
    /// The dtype two floating-point dtypes compute in together under torch's type promotion: the same dtype, float64 when
    /// either is, else float32 (bfloat16 with float16 included, as neither holds the other).
    /// </summary>
    public static SafeTensorsDType Promote(SafeTensorsDType left, SafeTensorsDType right)
    {
        ArgumentNullException.ThrowIfNull(left);
        ArgumentNullException.ThrowIfNull(right);
        if (!left.IsFloatingPoint || !right.IsFloatingPoint)
        {
            throw new ArgumentException($"type promotion is defined here for floating-point dtypes only, got {left} and {right}");
        }
        return left == right ? left : left == F64 || right == F64 ? F64 : F32;
    }

    /// <summary>Every dtype of the safetensors specification.</summary>
    public static IReadOnlyList<SafeTensorsDType> All { get; } =
        [Bool, U8, I8, F8E5M2, F8E4M3, I16, U16, F16, BF16, I32, U32, F32, I64, U64, F64, C64];

    private static readonly FrozenDictionary<string, SafeTensorsDType> ByName =
        All.ToFrozenDictionary(d => d.Name, StringComparer.Ordinal);

    private static readonly FrozenDictionary<string, SafeTensorsDType> ByUserName = All
        .SelectMany(d => new[] { (Key: d.Name, Value: d), (Key: d.TorchDtypeName!, Value: d) })
        .Concat<(string Key, SafeTensorsDType Value)>([("fp32", F32), ("fp16", F16), ("bf16", BF16), ("half", F16), ("float", F32), ("double", F64)])
        .DistinctBy(p => p.Key, StringComparer.OrdinalIgnoreCase)
        .ToFrozenDictionary(p => p.Key, p => p.Value, StringComparer.OrdinalIgnoreCase);

    /// <summary>The dtype with this header name (exact, as the spec spells it), or null.</summary>
    public static SafeTensorsDType? FromHeaderName(string name) => ByName.GetValueOrDefault(name);

    /// <summary>
    /// Parses a dtype as users and configs write it: <c>BF16</c>, <c>bfloat16</c>, <c>torch.bfloat16</c>, <c>fp16</c>, <c>float32</c>...
    /// </summary>
    public static SafeTensorsDType Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var key = text.Trim();
        if (key.StartsWith("torch.", StringComparison.Ordinal))
        {
            key = key["torch.".Length..];
        }
        return ByUserName.TryGetValue(key, out var dtype)
            ? dtype
            : throw new FormatException($"unknown dtype '{text}' (expected one of {string.Join(", ", All.Select(d => d.TorchDtypeName))})");
    }

    /// <summary>The dtype of a TorchSharp element type.</summary>
    public static SafeTensorsDType FromScalarType(ScalarType scalarType) =>
        All.FirstOrDefault(d => d.ScalarType == scalarType)
        ?? throw new NotSupportedException($"TorchSharp type {scalarType} has no safetensors dtype");

    /// <summary>The TorchSharp element type, or a clear error for dtypes TorchSharp lacks.</summary>
    public ScalarType RequireScalarType() =>
        ScalarType ?? throw new NotSupportedException($"dtype {Name} has no TorchSharp equivalent; its bytes can only be copied through");

    public override string ToString() => Name;
}
