using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Core.Engine;

/// <summary>
/// A preallocated 1-D tensor handed out as shaped views of its first elements. It grows (once, to the largest size
/// asked) instead of allocating per tensor; views are disposed by the caller's dispose scope, the storage by Dispose.
/// </summary>
internal sealed class PooledBuffer : IDisposable
{
    private readonly ScalarType _dtype;
    private readonly Device _device;
    private Tensor? _storage;

    public PooledBuffer(ScalarType dtype, Device device, long initialCapacity = 0)
    {
        _dtype = dtype;
        _device = device;
        if (initialCapacity > 0)
        {
            EnsureCapacity(initialCapacity);
        }
    }

    public long Capacity { get; private set; }

    /// <summary>A contiguous view with <paramref name="shape"/> (contents undefined).</summary>
    public Tensor View(long[] shape)
    {
        long n = 1;
        foreach (var d in shape)
        {
            n *= d;
        }
        EnsureCapacity(Math.Max(n, 1));
        using var flat = _storage!.narrow(0, 0, n);
        return flat.view(shape);
    }

    public void Dispose()
    {
        _storage?.Dispose();
        _storage = null;
        Capacity = 0;
    }

    private void EnsureCapacity(long elements)
    {
        if (elements <= Capacity)
        {
            return;
        }
        _storage?.Dispose();
        _storage = torch.empty(elements, _dtype, _device).DetachFromDisposeScope();
        Capacity = elements;
    }
}
