using SensMerging.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Strategies.Common;

/// <summary>
/// Pointers to a block's memory for the managed kernels: each tensor itself when the kernel reads it as stored, else
/// an exact contiguous CPU copy in the kernel's dtype (owned here); the output likewise, a copy being written back by
/// <see cref="CopyOutputBack"/>. Disposing frees the copies.
/// </summary>
internal sealed unsafe class BlockPointers : IDisposable
{
    private readonly List<Tensor> _owned = [];
    private Tensor? _outputCopy;

    private BlockPointers(long count, int models)
    {
        Count = count;
        Models = new nint[models];
    }

    /// <summary>The base's elements (null when the block is empty).</summary>
    public void* Base { get; private set; }

    /// <summary>Each model's elements, in the request's order (zero when the block is empty).</summary>
    public nint[] Models { get; }

    /// <summary>Where the kernel writes the output (null without an output or when the block is empty).</summary>
    public void* Output { get; private set; }

    /// <summary>Elements in the block.</summary>
    public long Count { get; }

    /// <summary>The pointers of <paramref name="request"/>'s base, models and (with <paramref name="withOutput"/>) output.</summary>
    /// <param name="request">The block.</param>
    /// <param name="readsAsStored">True for a tensor the kernel reads in place (contiguous CPU memory of its format).</param>
    /// <param name="copyType">The dtype of the copies of the other tensors (exact for the inputs a host hands).</param>
    /// <param name="withOutput">Whether the kernel writes the output.</param>
    public static BlockPointers Of(MergeTensorRequest request, Func<Tensor, bool> readsAsStored, ScalarType copyType, bool withOutput)
    {
        var block = new BlockPointers(request.Output.numel(), request.Models.Count);
        if (block.Count == 0)
        {
            return block;
        }
        block.Base = block.Pointer(request.Base!, readsAsStored, copyType);
        for (var i = 0; i < block.Models.Length; i++)
        {
            block.Models[i] = (nint)block.Pointer(request.Models[i], readsAsStored, copyType);
        }
        if (withOutput)
        {
            if (readsAsStored(request.Output))
            {
                block.Output = NativeSpans.Address(request.Output);
            }
            else
            {
                block._outputCopy = torch.empty(block.Count, copyType);
                block.Output = NativeSpans.Address(block._outputCopy);
            }
        }
        return block;
    }

    /// <summary>Copies the output copy (if one was needed) into <paramref name="output"/>.</summary>
    public void CopyOutputBack(Tensor output)
    {
        if (_outputCopy is not null)
        {
            using var shaped = _outputCopy.view(output.shape);
            output.copy_(shaped);
        }
    }

    public void Dispose()
    {
        foreach (var t in _owned)
        {
            t.Dispose();
        }
        _outputCopy?.Dispose();
    }

    private void* Pointer(Tensor tensor, Func<Tensor, bool> readsAsStored, ScalarType copyType)
    {
        if (readsAsStored(tensor))
        {
            return NativeSpans.Address(tensor);
        }
        var copy = tensor.to(copyType, torch.CPU).contiguous();
        _owned.Add(copy);
        return NativeSpans.Address(copy);
    }
}
