using SensMerging.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Strategies.Common;

/// <summary>
/// A session for a tensor whose merge needs it whole although the host streams it: one statistics pass copies every
/// block's inputs into whole tensors (of the blocks' dtype, on their device), the first <see cref="Merge"/> merges the
/// whole tensor with <paramref name="mergeWhole"/> into a whole output and every block takes its slice of it. Same bits
/// as the whole-tensor merge, and the whole tensor's memory (plus its output) while the session lasts: the fallback for
/// requests a strategy's streamed path does not cover (the task-arithmetic family's half-precision DARE and L1 rescale).
/// Its whole tensors are its own (detached from the caller's dispose scope) until it is disposed.
/// </summary>
internal sealed class GatheredSession(MergeTensorInfo tensor, Action<MergeTensorRequest> mergeWhole) : ITensorMergeSession
{
    private readonly List<Tensor> _inputs = [];
    private readonly long[] _shape = [.. tensor.Shape];
    private Tensor? _output;
    private bool _gathered;

    public bool BeginPass(int pass)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(pass);
        if (pass == 0)
        {
            return true;
        }
        _gathered = true;
        return false;
    }

    public void Observe(MergeTensorRequest block)
    {
        ArgumentNullException.ThrowIfNull(block);
        if (_gathered)
        {
            throw new InvalidOperationException($"tensor '{tensor.TensorName}' observed after its blocks were gathered");
        }
        IReadOnlyList<Tensor> sources = block.Base is null ? block.Models : [block.Base, .. block.Models];
        if (_inputs.Count == 0)
        {
            foreach (var s in sources)
            {
                _inputs.Add(torch.empty(_shape, s.dtype, s.device).DetachFromDisposeScope());
            }
        }
        if (sources.Count != _inputs.Count)
        {
            throw new ArgumentException($"tensor '{tensor.TensorName}' started with {_inputs.Count} inputs, a block has {sources.Count}", nameof(block));
        }
        var count = block.Output.numel();
        for (var s = 0; s < sources.Count; s++)
        {
            using var flat = _inputs[s].view(-1);
            using var slice = flat.narrow(0, block.ElementStart, count);
            using var source = sources[s].reshape(-1);
            slice.copy_(source);
        }
    }

    public void Merge(MergeTensorRequest block)
    {
        ArgumentNullException.ThrowIfNull(block);
        if (!_gathered || _inputs.Count == 0)
        {
            throw new InvalidOperationException($"tensor '{tensor.TensorName}' merged before its blocks were gathered (call BeginPass until it returns false)");
        }
        if (_output is null)
        {
            _output = torch.empty(_shape, block.Output.dtype, block.Output.device).DetachFromDisposeScope();
            using var scratch = new OwnedScratch(_shape, block.Output.device);
            mergeWhole(block with
            {
                Base = block.Base is null ? null : _inputs[0],
                Models = block.Base is null ? _inputs : _inputs[1..],
                Output = _output,
                Scratch = scratch,
                ElementStart = 0,
            });
        }
        using var outputFlat = _output.view(-1);
        using var slice = outputFlat.narrow(0, block.ElementStart, block.Output.numel());
        using var shaped = slice.view(block.Output.shape);
        block.Output.copy_(shaped);
    }

    public void Dispose()
    {
        foreach (var t in _inputs)
        {
            t.Dispose();
        }
        _inputs.Clear();
        _output?.Dispose();
        _output = null;
    }

    /// <summary>Scratch tensors of the whole tensor's shape, owned until disposed.</summary>
    private sealed class OwnedScratch(long[] shape, Device device) : ITensorScratch, IDisposable
    {
        private readonly List<Tensor> _rented = [];

        public Tensor Rent(ScalarType dtype = ScalarType.Float32) => Rent(shape, dtype);

        public Tensor Rent(long[] shape, ScalarType dtype = ScalarType.Float32)
        {
            var tensor = torch.empty(shape, dtype, device);
            _rented.Add(tensor);
            return tensor;
        }

        public void Dispose()
        {
            foreach (var t in _rented)
            {
                t.Dispose();
            }
        }
    }
}
