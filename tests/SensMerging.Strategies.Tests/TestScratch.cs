using SensMerging.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Strategies.Tests;

/// <summary>A scratch pool for tests: every rented tensor is filled with NaN (contents are undefined by contract) and kept until disposal.</summary>
internal sealed class TestScratch(long[] shape) : ITensorScratch, IDisposable
{
    private readonly List<Tensor> _rented = [];

    public IReadOnlyList<Tensor> Rented => _rented;

    public Tensor Rent(ScalarType dtype = ScalarType.Float32) => Rent(shape, dtype);

    public Tensor Rent(long[] shape, ScalarType dtype = ScalarType.Float32)
    {
        var tensor = torch.empty(shape, dtype);
        if (torch.is_floating_point(tensor))
        {
            tensor.fill_(double.NaN);
        }
        _rented.Add(tensor);
        return tensor;
    }

    public void Dispose()
    {
        foreach (var tensor in _rented)
        {
            tensor.Dispose();
        }
        _rented.Clear();
    }
}
