using SensMerging.Abstractions;
using static TorchSharp.torch;

namespace SensMerging.Core.Engine;

/// <summary>
/// <see cref="ITensorScratch"/> backed by per-worker pooled buffers: each Rent during one Merge call gets its own buffer
/// (reused by later calls), so a strategy's temporaries cost no allocation after the first tensors.
/// </summary>
internal sealed class PooledScratch : ITensorScratch, IDisposable
{
    private readonly Device _device;
    private readonly Dictionary<ScalarType, List<PooledBuffer>> _pools = [];
    private readonly Dictionary<ScalarType, int> _used = [];
    private long[] _shape = [];

    public PooledScratch(Device device) => _device = device;

    /// <summary>Starts a Merge call for tensors of <paramref name="shape"/>.</summary>
    public void Begin(long[] shape)
    {
        _shape = shape;
        _used.Clear();
    }

    /// <summary>Pre-creates <paramref name="count"/> float32 buffers of <paramref name="capacity"/> elements.</summary>
    public void Reserve(int count, long capacity)
    {
        var list = Pool(ScalarType.Float32);
        while (list.Count < count)
        {
            list.Add(new PooledBuffer(ScalarType.Float32, _device, capacity));
        }
    }

    public Tensor Rent(ScalarType dtype = ScalarType.Float32) => Rent(_shape, dtype);

    public Tensor Rent(long[] shape, ScalarType dtype = ScalarType.Float32)
    {
        ArgumentNullException.ThrowIfNull(shape);
        var list = Pool(dtype);
        var index = _used.GetValueOrDefault(dtype);
        _used[dtype] = index + 1;
        if (index == list.Count)
        {
            list.Add(new PooledBuffer(dtype, _device));
        }
        return list[index].View(shape);
    }

    public void Dispose()
    {
        foreach (var b in _pools.Values.SelectMany(l => l))
        {
            b.Dispose();
        }
        _pools.Clear();
    }

    private List<PooledBuffer> Pool(ScalarType dtype)
    {
        if (!_pools.TryGetValue(dtype, out var list))
        {
            list = [];
            _pools[dtype] = list;
        }
        return list;
    }
}
