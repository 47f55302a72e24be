namespace SensMerging.Core.SafeTensors;

/// <summary>One tensor entry of a safetensors header.</summary>
/// <param name="Name">The tensor's name.</param>
/// <param name="DType">Element type.</param>
/// <param name="Shape">Dimensions (empty for a rank-0 tensor).</param>
/// <param name="Begin">Start of the tensor's bytes, relative to the data buffer.</param>
/// <param name="End">End (exclusive) of the tensor's bytes, relative to the data buffer.</param>
public sealed record SafeTensorInfo(string Name, SafeTensorsDType DType, IReadOnlyList<long> Shape, long Begin, long End)
{
    /// <summary>Number of bytes.</summary>
    public long ByteLength => End - Begin;

    /// <summary>Number of elements (1 for rank 0).</summary>
    public long ElementCount => TensorShape.ElementCount(Shape);

    /// <summary>The shape as an array (a copy), as TorchSharp wants it.</summary>
    public long[] ShapeArray() => [.. Shape];
}

/// <summary>Shape arithmetic shared by the reader, the writer and the engine.</summary>
public static class TensorShape
{
    /// <summary>Product of the dimensions; throws <see cref="OverflowException"/> when it does not fit in a long.</summary>
    public static long ElementCount(IReadOnlyList<long> shape)
    {
        ArgumentNullException.ThrowIfNull(shape);
        long n = 1;
        for (var i = 0; i < shape.Count; i++)
        {
            n = checked(n * shape[i]);
        }
        return n;
    }

    /// <summary><c>[2, 3]</c> style text for messages.</summary>
    public static string Format(IReadOnlyList<long> shape) => "[" + string.Join(", ", shape) + "]";

    /// <summary>True when both shapes have the same dimensions.</summary>
    public static bool SameAs(IReadOnlyList<long> a, IReadOnlyList<long> b)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        if (a.Count != b.Count)
        {
            return false;
        }
        for (var i = 0; i < a.Count; i++)
        {
            if (a[i] != b[i])
            {
                return false;
            }
        }
        return true;
    }
}
