using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Core.SafeTensors;

/// <summary>Access to the raw bytes of contiguous CPU tensors, in pieces small enough for a <see cref="Span{T}"/>.</summary>
public static class TensorBytes
{
    /// <summary>Most bytes handed out in one span.</summary>
    public const long MaxSpanBytes = 1L << 30;

    /// <summary>A callback that gets one piece of a tensor's memory and the piece's byte offset in the tensor.</summary>
    public delegate void SpanAction(Span<byte> span, long byteOffset);

    /// <summary>Byte length of a tensor's elements.</summary>
    public static long ByteLength(Tensor tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        return tensor.NumberOfElements * tensor.ElementSize;
    }

    /// <summary>Calls <paramref name="action"/> with the tensor's memory, in order, in spans of at most 1 GiB.</summary>
    public static void ForEachSpan(Tensor tensor, SpanAction action)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        ArgumentNullException.ThrowIfNull(action);
        if (tensor.device_type != DeviceType.CPU || !tensor.is_contiguous())
        {
            throw new ArgumentException("tensor must be a contiguous CPU tensor", nameof(tensor));
        }
        var total = ByteLength(tensor);
        if (total == 0)
        {
            return;
        }
        if (total <= MaxSpanBytes)
        {
            action(tensor.bytes, 0);
            return;
        }
        var elementSize = tensor.ElementSize;
        var perPiece = MaxSpanBytes / elementSize;
        using var flat = tensor.view(tensor.NumberOfElements);
        for (long start = 0; start < tensor.NumberOfElements; start += perPiece)
        {
            using var piece = flat.narrow(0, start, Math.Min(perPiece, tensor.NumberOfElements - start));
            action(piece.bytes, start * elementSize);
        }
    }
}
