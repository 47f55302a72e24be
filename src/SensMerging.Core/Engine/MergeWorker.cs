using System.Diagnostics;
using SensMerging.Abstractions;
using SensMerging.Core.Models;
using SensMerging.Core.SafeTensors;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Core.Engine;

/// <summary>
/// The buffers and steps of one engine worker: inputs read from the files into pooled tensors (straight into the
/// float32 compute buffer when the input is F32 on CPU, else into a pooled raw buffer and converted with <c>copy_</c>),
/// the strategy called with a pooled output and scratch, and the result converted into a pooled buffer of the output
/// dtype. Nothing is allocated per tensor except small view handles, which the caller's dispose scope frees.
/// </summary>
internal sealed class MergeWorker : IDisposable
{
    private readonly IMergeStrategy _strategy;
    private readonly Device _device;
    private readonly bool _cpu;
    private readonly long _seed;
    private readonly int _layerCount;
    private readonly IReadOnlyList<string> _modelNames;
    private readonly PooledBuffer[] _compute;
    private readonly Dictionary<(int Slot, ScalarType Type), PooledBuffer> _raw = [];
    private readonly PooledBuffer _output;
    private readonly Dictionary<ScalarType, PooledBuffer> _outputRaw = [];
    private readonly PooledBuffer _bytes;
    private readonly PooledScratch _scratch;
    private long _readTicks;
    private long _mergeTicks;
    private long _convertTicks;

    public MergeWorker(IMergeStrategy strategy, Device device, int slots, long capacity, long seed, int layerCount, IReadOnlyList<string> modelNames)
    {
        _strategy = strategy;
        _device = device;
        _cpu = device.type == DeviceType.CPU;
        _seed = seed;
        _layerCount = layerCount;
        _modelNames = modelNames;
        _compute = new PooledBuffer[slots];
        for (var i = 0; i < slots; i++)
        {
            _compute[i] = new PooledBuffer(ScalarType.Float32, device, capacity);
        }
        _output = new PooledBuffer(ScalarType.Float32, device, capacity);
        _bytes = new PooledBuffer(ScalarType.Byte, torch.CPU);
        _scratch = new PooledScratch(device);
    }

    /// <summary>Bytes read from the input files by the last <see cref="Process"/>.</summary>
    public long LastBytesRead { get; private set; }

    /// <summary>Stopwatch ticks spent reading (and converting inputs), in the strategy, and converting the output.</summary>
    public (long Read, long Merge, long Convert) Ticks => (_readTicks, _mergeTicks, _convertTicks);

    /// <summary>
    /// Computes one work item and returns a contiguous CPU tensor holding its output bytes (valid until the next call;
    /// views belong to the current dispose scope).
    /// </summary>
    public Tensor Process(MergeWorkItem item)
    {
        var job = item.Job;
        if (!job.IsMerged)
        {
            return CopyThrough(item);
        }
        var started = Stopwatch.GetTimestamp();
        var inSize = job.InputDType.Size;
        var byteOffset = item.ElementStart * inSize;
        var inputs = new Tensor[job.Inputs.Count];
        for (var s = 0; s < inputs.Length; s++)
        {
            var f32 = _compute[s].View(item.Shape);
            if (_cpu && job.InputDType == SafeTensorsDType.F32)
            {
                ModelFolder.ReadInto(job.Inputs[s], byteOffset, f32);
            }
            else
            {
                var raw = Raw(s, job.InputDType.RequireScalarType()).View(item.Shape);
                ModelFolder.ReadInto(job.Inputs[s], byteOffset, raw);
                f32.copy_(raw);
            }
            inputs[s] = f32;
        }
        LastBytesRead = item.ElementCount * inSize * inputs.Length;
        var read = Stopwatch.GetTimestamp();
        _readTicks += read - started;
        var output = _output.View(item.Shape);
        _scratch.Begin(item.Shape);
        var models = job.HasBase ? inputs[1..] : inputs;
        _strategy.Merge(new MergeTensorRequest
        {
            TensorName = job.Name,
            LayerGroup = job.LayerGroup,
            Base = job.HasBase ? inputs[0] : null,
            Models = models,
            ModelNames = _modelNames,
            Weights = job.Weights,
            Parameters = job.Parameters,
            Output = output,
            Scratch = _scratch,
            Seed = StableSeed.Derive(_seed, job.Name, item.Block),
            LayerIndex = job.LayerIndex,
            LayerCount = _layerCount,
        });
        var merged = Stopwatch.GetTimestamp();
        _mergeTicks += merged - read;
        if (_cpu && job.OutputDType == SafeTensorsDType.F32)
        {
            return output;
        }
        var type = job.OutputDType.RequireScalarType();
        if (!_outputRaw.TryGetValue(type, out var buffer))
        {
            buffer = new PooledBuffer(type, torch.CPU);
            _outputRaw[type] = buffer;
        }
        var converted = buffer.View(item.Shape);
        converted.copy_(output);
        _convertTicks += Stopwatch.GetTimestamp() - merged;
        return converted;
    }

    public void Dispose()
    {
        foreach (var b in _compute)
        {
            b.Dispose();
        }
        foreach (var b in _raw.Values)
        {
            b.Dispose();
        }
        foreach (var b in _outputRaw.Values)
        {
            b.Dispose();
        }
        _output.Dispose();
        _bytes.Dispose();
        _scratch.Dispose();
    }

    private Tensor CopyThrough(MergeWorkItem item)
    {
        var started = Stopwatch.GetTimestamp();
        var source = item.Job.Inputs[0];
        var bytes = _bytes.View([source.ByteLength]);
        ModelFolder.ReadInto(source, 0, bytes);
        LastBytesRead = source.ByteLength;
        _readTicks += Stopwatch.GetTimestamp() - started;
        return bytes;
    }

    private PooledBuffer Raw(int slot, ScalarType type)
    {
        if (!_raw.TryGetValue((slot, type), out var buffer))
        {
            buffer = new PooledBuffer(type, torch.CPU, _compute[slot].Capacity);
            _raw[(slot, type)] = buffer;
        }
        return buffer;
    }
}
