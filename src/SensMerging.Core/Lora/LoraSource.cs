using System.Buffers;
using System.Numerics;
using SensMerging.Core.Models;
using SensMerging.Core.SafeTensors;

namespace SensMerging.Core.Lora;

/// <summary>
/// The bytes of a base weight <c>W [out, in]</c> with a LoRA update applied: <c>W + scale * B A</c>, with
/// <c>A [r, in]</c> and <c>B [out, r]</c>. Each read reads the requested range of W, the rows of B it covers and A
/// (r x in elements, kept while the tensor's blocks are being read and dropped when all its bytes were served), sums the
/// update in double precision (products of float32 values are exact in double) and rounds the result once to W's dtype
/// (half types through float32, as PyTorch's casts do).
/// </summary>
internal sealed class LoraSource(ModelTensor weight, ModelTensor a, ModelTensor b, double scale) : ITensorByteSource
{
    private readonly Lock _gate = new();
    private double[]? _a;
    private long _served;

    public void ReadBytes(long offsetInTensor, Span<byte> destination)
    {
        Apply(offsetInTensor, destination);
        // A is kept while the tensor is being read (its blocks, possibly in parallel) and dropped once every byte was served.
        if (Interlocked.Add(ref _served, destination.Length) >= weight.ByteLength)
        {
            lock (_gate)
            {
                _a = null;
                _served = 0;
            }
        }
    }

    private double[] LoadA()
    {
        lock (_gate)
        {
            if (_a is null)
            {
                var values = new double[a.ElementCount];
                Read(a, 0, values);
                _a = values;
            }
            return _a;
        }
    }

    private void Apply(long offsetInTensor, Span<byte> destination)
    {
        weight.Source.ReadBytes(offsetInTensor, destination);
        var size = weight.DType.Size;
        if (offsetInTensor % size != 0 || destination.Length % size != 0)
        {
            throw new ArgumentException($"tensor '{weight.Name}' has a LoRA update applied; it is read in whole elements ({size} bytes)", nameof(offsetInTensor));
        }
        var count = destination.Length / size;
        if (count == 0)
        {
            return;
        }
        var columns = (int)weight.Shape[1];
        var rank = (int)a.Shape[0];
        var first = offsetInTensor / size;
        var firstRow = first / columns;
        var lastRow = (first + count - 1) / columns;
        var rows = (int)(lastRow - firstRow + 1);
        var aValues = LoadA();
        var bValues = ArrayPool<double>.Shared.Rent(rows * rank);
        var sums = ArrayPool<double>.Shared.Rent(columns);
        try
        {
            Read(b, firstRow * rank * b.DType.Size, bValues.AsSpan(0, rows * rank));
            for (var row = firstRow; row <= lastRow; row++)
            {
                var from = row == firstRow ? (int)(first % columns) : 0;
                var to = row == lastRow ? (int)((first + count - 1) % columns) + 1 : columns;
                var sum = sums.AsSpan(from, to - from);
                sum.Clear();
                for (var k = 0; k < rank; k++)
                {
                    MultiplyAdd(sum, bValues[((row - firstRow) * rank) + k], aValues.AsSpan((k * columns) + from, to - from));
                }
                var at = (int)((row * columns) + from - first) * size;
                for (var c = 0; c < sum.Length; c++, at += size)
                {
                    var element = destination.Slice(at, size);
                    ElementValues.Write(weight.DType, element, ElementValues.Read(weight.DType, element) + (scale * sum[c]));
                }
            }
        }
        finally
        {
            ArrayPool<double>.Shared.Return(bValues);
            ArrayPool<double>.Shared.Return(sums);
        }
    }

    /// <summary><c>sum[c] += factor * values[c]</c>, a multiply then an add per element (no fused multiply-add, as the scalar loop).</summary>
    private static void MultiplyAdd(Span<double> sum, double factor, ReadOnlySpan<double> values)
    {
        var c = 0;
        if (Vector.IsHardwareAccelerated && sum.Length >= Vector<double>.Count)
        {
            var f = new Vector<double>(factor);
            for (; c <= sum.Length - Vector<double>.Count; c += Vector<double>.Count)
            {
                var target = sum.Slice(c, Vector<double>.Count);
                (new Vector<double>(target) + (f * new Vector<double>(values.Slice(c, Vector<double>.Count)))).CopyTo(target);
            }
        }
        for (; c < sum.Length; c++)
        {
            sum[c] += factor * values[c];
        }
    }

    private static void Read(ModelTensor tensor, long byteOffset, Span<double> values)
    {
        var size = tensor.DType.Size;
        var bytes = ArrayPool<byte>.Shared.Rent(values.Length * size);
        try
        {
            var span = bytes.AsSpan(0, values.Length * size);
            tensor.Source.ReadBytes(byteOffset, span);
            for (var i = 0; i < values.Length; i++)
            {
                values[i] = ElementValues.Read(tensor.DType, span.Slice(i * size, size));
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(bytes);
        }
    }
}
