using System.Diagnostics;
using System.Runtime.InteropServices;
using SensMerging.Abstractions;
using SensMerging.Core.Models;
using SensMerging.Core.SafeTensors;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Core.Engine;

/// <summary>
/// The buffers and steps of one engine worker: inputs read from the files into pooled tensors (straight into the
/// float32 compute buffer when the input is F32 on CPU; BF16 on CPU straight into BF16 buffers when the strategy takes
/// bfloat16 as stored and the output is BF16 too, else through a small staging buffer widened in managed SIMD; else
/// into a pooled raw buffer and converted with <c>copy_</c>),
/// the strategy called with a pooled output and scratch, and the result converted into a pooled buffer of the output
/// dtype. Nothing is allocated per tensor except small view handles, which the caller's dispose scope frees.
/// </summary>
internal sealed class MergeWorker : IDisposable
{
    /// <summary>Items of at least this many elements read their inputs in parallel.</summary>
    private const long ParallelReadElements = 1L << 20;

    /// <summary>
    /// BF16 inputs are read in pieces of this many elements into a small per-slot staging buffer and widened from there
    /// (the staged bytes stay in the core's cache, instead of a block-sized raw buffer written and read back from memory).
    /// </summary>
    internal const int StagingElements = 64 * 1024;

    private readonly IMergeStrategy _strategy;
    private readonly Device _device;
    private readonly bool _cpu;
    private readonly long _seed;
    private readonly int _layerCount;
    private readonly PooledBuffer[] _compute;
    private readonly Dictionary<(int Slot, ScalarType Type), PooledBuffer> _raw = [];
    private readonly byte[][] _staging;
    private readonly OutputSet[] _outputs;
    private readonly System.Collections.Concurrent.ConcurrentQueue<OutputSet> _freeOutputs = new();
    private readonly SemaphoreSlim _freeOutputCount;
    private readonly PooledBuffer _statisticsOutput;
    private readonly PooledBuffer _statisticsOutputBFloat16;
    private readonly bool _acceptsBFloat16;
    private readonly PooledScratch _scratch;
    private readonly NonFiniteTally _nonFinite;
    private readonly (long Nan, long Inf)[] _found;
    private long _readTicks;
    private long _mergeTicks;
    private long _convertTicks;
    private long _waitTicks;

    /// <param name="nonFinite">Where the NaN and Inf values found in the inputs are counted.</param>
    /// <param name="outputSets">
    /// Output buffer sets to rotate through: 2 lets the worker compute the next item while the writer still writes the last.
    /// </param>
    public MergeWorker(
        IMergeStrategy strategy, Device device, int slots, long capacity, long seed, int layerCount,
        NonFiniteTally nonFinite, int outputSets = 2)
    {
        _nonFinite = nonFinite;
        _found = new (long, long)[slots];
        _strategy = strategy;
        _device = device;
        _cpu = device.type == DeviceType.CPU;
        _seed = seed;
        _layerCount = layerCount;
        _compute = new PooledBuffer[slots];
        for (var i = 0; i < slots; i++)
        {
            _compute[i] = new PooledBuffer(ScalarType.Float32, device, capacity);
        }
        _staging = new byte[_cpu ? slots : 0][];
        for (var i = 0; i < _staging.Length; i++)
        {
            _staging[i] = GC.AllocateUninitializedArray<byte>(StagingElements * sizeof(ushort));
        }
        var sets = Math.Max(1, outputSets);
        // A writer may hold this worker's outputs back (to hash them in order) while it keeps two sets free to compute into.
        _outputs = [.. Enumerable.Range(0, sets).Select(_ => new OutputSet(device, capacity, this, sets - 2))];
        foreach (var set in _outputs)
        {
            _freeOutputs.Enqueue(set);
        }
        _freeOutputCount = new SemaphoreSlim(sets, sets);
        _statisticsOutput = new PooledBuffer(ScalarType.Float32, device);
        _statisticsOutputBFloat16 = new PooledBuffer(ScalarType.BFloat16, device);
        _acceptsBFloat16 = _cpu && strategy.Traits.AcceptsBFloat16;
        _scratch = new PooledScratch(device);
    }

    /// <summary>Bytes read from the input files by the last <see cref="Process"/>.</summary>
    public long LastBytesRead { get; private set; }

    /// <summary>Stopwatch ticks spent reading (and converting inputs), in the strategy, converting the output, and waiting for a free output set.</summary>
    public (long Read, long Merge, long Convert, long Wait) Ticks => (_readTicks, _mergeTicks, _convertTicks, _waitTicks);

    /// <summary>
    /// Computes one work item into a free output set (waiting for the writer while every set is pending) and returns its
    /// output bytes as a contiguous CPU tensor; call <see cref="PendingOutput.Release"/> once they are written.
    /// </summary>
    public PendingOutput Process(MergeWorkItem item, CancellationToken cancellationToken)
    {
        var job = item.Job;
        var set = AcquireOutput(cancellationToken);
        if (!job.IsMerged)
        {
            return new PendingOutput(CopyThrough(item, set), set);
        }
        var inputs = ReadInputs(item, countNonFinite: true);
        LastBytesRead = item.ElementCount * job.InputBytesPerElement;
        var output = OutputView(set, job, item.Shape);
        var request = Request(item, inputs, output, StableSeed.Derive(_seed, job.Name, item.Block));
        var started = Stopwatch.GetTimestamp();
        _scratch.Begin(item.Shape);
        _strategy.Merge(request);
        _mergeTicks += Stopwatch.GetTimestamp() - started;
        return new PendingOutput(ConvertOutput(item, output, set), set);
    }

    /// <summary>
    /// Merges a streamed item through an <see cref="ITensorMergeSession"/>: the statistics passes read every block again
    /// from the files (a tensor of one block is read once), then each merged block goes to <paramref name="emit"/> in order
    /// with its output bytes (<see cref="LastBytesRead"/> is not set: count the emitted blocks' input bytes). NaN and Inf
    /// values are counted on the merge pass's reads, so each input element once.
    /// </summary>
    public void ProcessStreamed(MergeWorkItem item, Action<MergeWorkItem, PendingOutput> emit, CancellationToken cancellationToken)
    {
        var job = item.Job;
        var blocks = item.Blocks ?? throw new ArgumentException($"work item for '{job.Name}' is not streamed", nameof(item));
        var streaming = (IStreamingMergeStrategy)_strategy;
        var seed = StableSeed.Derive(_seed, job.Name, 0);
        var started = Stopwatch.GetTimestamp();
        using var session = streaming.BeginTensor(new MergeTensorInfo
        {
            TensorName = job.Name,
            LayerGroup = job.LayerGroup,
            ModelLayerGroups = job.ModelLayerGroups,
            Shape = job.Shape,
            HasBase = job.HasBase,
            ModelNames = job.ModelNames,
            Weights = job.Weights,
            Parameters = job.Parameters,
            Seed = seed,
            LayerIndex = job.LayerIndex,
            LayerCount = _layerCount,
            ComputeDType = job.ComputeDType.RequireScalarType(),
        });
        _mergeTicks += Stopwatch.GetTimestamp() - started;
        // Views of the pooled buffers made here belong to the caller's dispose scope (a few handles per block). Statistics
        // passes use the worker's own statistics buffer as the request's Output (scratch), so they never wait for the
        // writer to free an output set; the merge pass hands its output set to emit, which releases it once written.
        MergeTensorRequest Read(MergeWorkItem block, Tensor output, bool count) => Request(block, ReadInputs(block, count), output, seed);
        var singleSet = blocks.Count == 1 ? AcquireOutput(cancellationToken) : null;
        var single = singleSet is null ? null : Read(blocks[0], OutputView(singleSet, job, blocks[0].Shape), count: true);
        var statistics = AsStored(job) ? _statisticsOutputBFloat16 : _statisticsOutput;
        for (var pass = 0; Timed(() => session.BeginPass(pass)); pass++)
        {
            foreach (var block in blocks)
            {
                var request = single ?? Read(block, statistics.View(block.Shape), count: false);
                _scratch.Begin(block.Shape);
                Timed(() => session.Observe(request));
            }
        }
        foreach (var block in blocks)
        {
            var set = singleSet ?? AcquireOutput(cancellationToken);
            var request = single ?? Read(block, OutputView(set, job, block.Shape), count: true);
            _scratch.Begin(block.Shape);
            Timed(() => session.Merge(request));
            emit(block, new PendingOutput(ConvertOutput(block, request.Output, set), set));
        }
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
        foreach (var o in _outputs)
        {
            o.Dispose();
        }
        _statisticsOutput.Dispose();
        _statisticsOutputBFloat16.Dispose();
        _scratch.Dispose();
        _freeOutputCount.Dispose();
    }

    /// <summary>
    /// A free output set (the one freed longest ago), waiting while the writer has them all. Any free set, not a fixed
    /// rotation: the writer may hold some back to hash them in order, and the worker must go on with the others.
    /// </summary>
    private OutputSet AcquireOutput(CancellationToken cancellationToken)
    {
        var started = Stopwatch.GetTimestamp();
        _freeOutputCount.Wait(cancellationToken);
        _waitTicks += Stopwatch.GetTimestamp() - started;
        return _freeOutputs.TryDequeue(out var set) ? set : throw new InvalidOperationException("output set count and queue disagree");
    }

    /// <summary>Gives a set back once the writer has written (or dropped) its contents.</summary>
    private void ReturnOutput(OutputSet set)
    {
        _freeOutputs.Enqueue(set);
        _freeOutputCount.Release();
    }

    private bool Timed(Func<bool> step)
    {
        var started = Stopwatch.GetTimestamp();
        var result = step();
        _mergeTicks += Stopwatch.GetTimestamp() - started;
        return result;
    }

    private void Timed(Action step)
    {
        var started = Stopwatch.GetTimestamp();
        step();
        _mergeTicks += Stopwatch.GetTimestamp() - started;
    }

    /// <summary>
    /// True when the job's tensors go to the strategy as stored, in bfloat16: the strategy accepts them
    /// (<see cref="StrategyTraits.AcceptsBFloat16"/>), the device is the CPU, and inputs and output are both BF16.
    /// </summary>
    private bool AsStored(MergeJob job) =>
        _acceptsBFloat16 && job.CastDType == SafeTensorsDType.BF16 && job.OutputDType == SafeTensorsDType.BF16 && job.StoredAsBFloat16;

    /// <summary>Where the strategy writes an item's result: the set's float32 buffer, or its BF16 buffer when <see cref="AsStored"/>.</summary>
    private Tensor OutputView(OutputSet set, MergeJob job, long[] shape) =>
        AsStored(job) ? set.Converted(ScalarType.BFloat16).View(shape) : set.Float.View(shape);

    /// <summary>
    /// Whether an input stored in <paramref name="stored"/> must be rounded to <paramref name="cast"/> after it is read into
    /// float32: when the cast dtype is narrower than float32 and not the stored one (float64 inputs are already rounded
    /// to float32 by the read, which is as far as the engine computes).
    /// </summary>
    private static bool NeedsRounding(SafeTensorsDType stored, SafeTensorsDType cast) =>
        cast != stored && cast != SafeTensorsDType.F32 && cast != SafeTensorsDType.F64;

    /// <summary>
    /// Reads an item's inputs into the float32 compute buffers (BF16 widened piecewise in managed code, other dtypes by copy_),
    /// or, when <see cref="AsStored"/>, as stored into BF16 buffers; the inputs in parallel when the item is large enough
    /// to pay for it (reads from the page cache are memory copies). Each input is read in its own stored dtype and then
    /// rounded to the job's cast dtype where that is narrower (<see cref="MergePlan.CastDType"/>). With
    /// <paramref name="countNonFinite"/> the NaN and Inf values of each input are counted right after it is read and cast
    /// (while the data is still in cache; a cast to float16 can overflow) into the tally.
    /// </summary>
    private Tensor[] ReadInputs(MergeWorkItem item, bool countNonFinite)
    {
        var started = Stopwatch.GetTimestamp();
        var job = item.Job;
        var stored = AsStored(job);
        // Views are made here, on the worker thread, so they belong to its dispose scope.
        var inputs = new Tensor[job.Inputs.Count];
        var raws = new Tensor?[inputs.Length];
        var staged = new bool[inputs.Length];
        var rounded = new Tensor?[inputs.Length];
        for (var s = 0; s < inputs.Length; s++)
        {
            var dtype = job.Inputs[s].DType;
            var direct = _cpu && dtype == SafeTensorsDType.F32;
            staged[s] = !stored && _cpu && dtype == SafeTensorsDType.BF16 && item.ElementCount <= int.MaxValue / sizeof(float);
            inputs[s] = stored ? Raw(s, ScalarType.BFloat16).View(item.Shape) : _compute[s].View(item.Shape);
            raws[s] = direct || staged[s] || stored ? null : Raw(s, dtype.RequireScalarType()).View(item.Shape);
            rounded[s] = !stored && NeedsRounding(dtype, job.CastDType) ? Raw(s, job.CastDType.RequireScalarType()).View(item.Shape) : null;
        }
        void ReadOne(int s)
        {
            var source = job.Inputs[s];
            var byteOffset = item.ElementStart * source.DType.Size;
            var counted = false;
            if (staged[s])
            {
                counted = countNonFinite && rounded[s] is null;
                _found[s] = ReadWidened(source, byteOffset, _staging[s], inputs[s], counted);
            }
            else if (raws[s] is not { } raw)
            {
                ModelFolder.ReadInto(source, byteOffset, inputs[s]);
            }
            else
            {
                ModelFolder.ReadInto(source, byteOffset, raw);
                if (!(_cpu && BFloat16Conversion.TryToSingle(raw, inputs[s])))
                {
                    inputs[s].copy_(raw);
                }
            }
            if (rounded[s] is { } narrow)
            {
                // As torch's Tensor.to: round to nearest even in the cast dtype, then computed on in float32 (exact widening).
                if (!(_cpu && BFloat16Conversion.TryFromSingle(inputs[s], narrow)))
                {
                    narrow.copy_(inputs[s]);
                }
                if (!(_cpu && BFloat16Conversion.TryToSingle(narrow, inputs[s])))
                {
                    inputs[s].copy_(narrow);
                }
            }
            if (countNonFinite && !counted)
            {
                _found[s] = !_cpu ? CountOnDevice(inputs[s])
                    : stored ? NonFiniteCount.BFloat16(MemoryMarshal.Cast<byte, ushort>(inputs[s].bytes))
                    : NonFiniteCount.Float32(MemoryMarshal.Cast<byte, float>(inputs[s].bytes));
            }
        }
        if (_cpu && item.ElementCount >= ParallelReadElements)
        {
            Parallel.For(0, inputs.Length, ReadOne);
        }
        else
        {
            for (var s = 0; s < inputs.Length; s++)
            {
                ReadOne(s);
            }
        }
        _readTicks += Stopwatch.GetTimestamp() - started;
        if (countNonFinite)
        {
            for (var s = 0; s < inputs.Length; s++)
            {
                var (nan, inf) = _found[s];
                _found[s] = default;
                _nonFinite.Add(job, s, nan, inf);
            }
        }
        return inputs;
    }

    /// <summary>
    /// Reads bf16 elements piecewise through <paramref name="staging"/> and widens them into the float32 <paramref name="target"/>;
    /// with <paramref name="countNonFinite"/> counts NaN and Inf in each staged piece (in cache) on the way.
    /// </summary>
    private static (long Nan, long Inf) ReadWidened(ModelTensor source, long byteOffset, byte[] staging, Tensor target, bool countNonFinite)
    {
        var floats = MemoryMarshal.Cast<byte, float>(target.bytes);
        long nan = 0, inf = 0;
        for (var at = 0; at < floats.Length; at += StagingElements)
        {
            var count = Math.Min(StagingElements, floats.Length - at);
            var raw = staging.AsSpan(0, count * sizeof(ushort));
            ModelFolder.ReadBytes(source, byteOffset + ((long)at * sizeof(ushort)), raw);
            var bits = MemoryMarshal.Cast<byte, ushort>(raw);
            if (countNonFinite)
            {
                var (n, i) = NonFiniteCount.BFloat16(bits);
                nan += n;
                inf += i;
            }
            BFloat16Bits.ToSingle(bits, floats.Slice(at, count));
        }
        return (nan, inf);
    }

    /// <summary>NaN and Inf in an input on the compute device (not the CPU): two reductions only when any value is not finite.</summary>
    private static (long Nan, long Inf) CountOnDevice(Tensor input)
    {
        using var finite = torch.isfinite(input);
        using var allFinite = finite.all();
        if (allFinite.item<bool>())
        {
            return default;
        }
        using var nan = torch.isnan(input);
        using var nanCount = nan.sum();
        using var inf = torch.isinf(input);
        using var infCount = inf.sum();
        return (nanCount.item<long>(), infCount.item<long>());
    }

    private MergeTensorRequest Request(MergeWorkItem item, Tensor[] inputs, Tensor output, long seed)
    {
        var job = item.Job;
        return new MergeTensorRequest
        {
            TensorName = job.Name,
            LayerGroup = job.LayerGroup,
            ModelLayerGroups = job.ModelLayerGroups,
            Base = job.HasBase ? inputs[0] : null,
            Models = job.HasBase ? inputs[1..] : inputs,
            ModelNames = job.ModelNames,
            Weights = job.Weights,
            Parameters = job.Parameters,
            Output = output,
            Scratch = _scratch,
            Seed = seed,
            TensorSeed = StableSeed.Derive(_seed, job.Name, 0),
            LayerIndex = job.LayerIndex,
            LayerCount = _layerCount,
            ElementStart = item.ElementStart,
            ComputeDType = job.ComputeDType.RequireScalarType(),
        };
    }

    /// <summary>The output in the job's output dtype (the strategy's output itself for F32 on CPU and when <see cref="AsStored"/>).</summary>
    private Tensor ConvertOutput(MergeWorkItem item, Tensor output, OutputSet set)
    {
        var job = item.Job;
        if ((_cpu && job.OutputDType == SafeTensorsDType.F32) || AsStored(job))
        {
            return output;
        }
        var started = Stopwatch.GetTimestamp();
        var type = job.OutputDType.RequireScalarType();
        var converted = set.Converted(type).View(item.Shape);
        if (!(_cpu && BFloat16Conversion.TryFromSingle(output, converted)))
        {
            converted.copy_(output);
        }
        _convertTicks += Stopwatch.GetTimestamp() - started;
        return converted;
    }

    private Tensor CopyThrough(MergeWorkItem item, OutputSet set)
    {
        var started = Stopwatch.GetTimestamp();
        var source = item.Job.Inputs[0];
        var bytes = set.Bytes.View([source.ByteLength]);
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

    /// <summary>One set of output buffers (float32 result, converted result, copied-through bytes) and whether it is free.</summary>
    internal sealed class OutputSet(Device device, long capacity, MergeWorker owner, int holdable) : IDisposable
    {
        /// <summary>The worker whose buffers these are.</summary>
        public MergeWorker Owner { get; } = owner;

        /// <summary>How many of the owner's sets a writer may hold back at once (0 or less: none).</summary>
        public int Holdable { get; } = holdable;

        private readonly Dictionary<ScalarType, PooledBuffer> _converted = [];

        public PooledBuffer Float { get; } = new(ScalarType.Float32, device, capacity);

        public PooledBuffer Bytes { get; } = new(ScalarType.Byte, torch.CPU);

        public PooledBuffer Converted(ScalarType type)
        {
            if (!_converted.TryGetValue(type, out var buffer))
            {
                buffer = new PooledBuffer(type, torch.CPU);
                _converted[type] = buffer;
            }
            return buffer;
        }

        public void Release() => Owner.ReturnOutput(this);

        public void Dispose()
        {
            Float.Dispose();
            Bytes.Dispose();
            foreach (var b in _converted.Values)
            {
                b.Dispose();
            }
        }
    }
}

/// <summary>An item's output bytes waiting to be written; <see cref="Release"/> frees its buffers for the worker's next item.</summary>
internal sealed record PendingOutput(Tensor Result, MergeWorker.OutputSet Set)
{
    public void Release() => Set.Release();
}
