using SensMerging.Core.SafeTensors;

namespace SensMerging.Core.Models;

/// <summary>A tensor of a model folder: where its bytes are and what they are.</summary>
public sealed record ModelTensor(string Name, SafeTensorsDType DType, IReadOnlyList<long> Shape, string FilePath, long FileOffset, long ByteLength)
{
    internal SafeTensorsFile File { get; init; } = null!;

    internal SafeTensorInfo Info { get; init; } = null!;

    /// <summary>Number of elements.</summary>
    public long ElementCount => TensorShape.ElementCount(Shape);
}
