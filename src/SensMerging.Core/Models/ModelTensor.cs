using SensMerging.Core.SafeTensors;

namespace SensMerging.Core.Models;

/// <summary>A tensor of a model folder: where its bytes are and what they are.</summary>
/// <param name="Name">The tensor's name.</param>
/// <param name="DType">Element type.</param>
/// <param name="Shape">Dimensions.</param>
/// <param name="FilePath">The weight file it is read from.</param>
/// <param name="FileOffset">Where its bytes start in that file (for a non-contiguous <c>.bin</c> view: its storage's first element).</param>
/// <param name="ByteLength">Bytes of its elements.</param>
public sealed record ModelTensor(string Name, SafeTensorsDType DType, IReadOnlyList<long> Shape, string FilePath, long FileOffset, long ByteLength)
{
    /// <summary>Where the bytes come from (a safetensors file, a PyTorch checkpoint's storage, a base weight with a LoRA applied).</summary>
    internal ITensorByteSource Source { get; init; } = null!;

    /// <summary>Number of elements.</summary>
    public long ElementCount => TensorShape.ElementCount(Shape);
}

/// <summary>
/// The seam between a model folder and its weight format: a tensor's bytes, in row-major order, read on demand into
/// memory the caller provides. Implementations are thread-safe.
/// </summary>
internal interface ITensorByteSource
{
    /// <summary>Reads <c>destination.Length</c> bytes of the tensor starting at <paramref name="offsetInTensor"/> (whole elements).</summary>
    void ReadBytes(long offsetInTensor, Span<byte> destination);
}

/// <summary>A tensor of a safetensors file.</summary>
internal sealed class SafeTensorsSource(SafeTensorsFile file, SafeTensorInfo info) : ITensorByteSource
{
    public void ReadBytes(long offsetInTensor, Span<byte> destination) => file.ReadBytes(info, offsetInTensor, destination);
}

/// <summary>A tensor of a PyTorch checkpoint.</summary>
internal sealed class PyTorchSource(PyTorch.PyTorchCheckpoint checkpoint, PyTorch.PyTorchTensorInfo info) : ITensorByteSource
{
    public void ReadBytes(long offsetInTensor, Span<byte> destination) => checkpoint.ReadBytes(info, offsetInTensor, destination);
}
