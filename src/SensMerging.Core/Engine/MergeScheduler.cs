using System.Diagnostics;
using System.Runtime.ExceptionServices;
using SensMerging.Core.SafeTensors;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Core.Engine;

/// <summary>
/// Runs a merge's work items on the workers and hands their outputs to one writer thread: which item goes next (largest
/// streamed tensors first), which worker buffers an item uses (one shared set for whole tensors larger than a worker's
/// buffers, taken one holder at a time), progress, stage times, and the first error, which cancels the other workers.
/// One instance per merge; outputs are written at their place in the shard files, so the order of completion does not
/// change the result.
/// </summary>
internal sealed class MergeScheduler : IDisposable
{
    private readonly MergePlan _plan;
    private readonly MergeOptions _options;
    private readonly Device _device;
    private readonly IReadOnlyList<MergeJob> _jobs;
    private readonly IReadOnlyList<MergeWorkItem> _items;
    private readonly ShardedSafeTensorsWriter _writer;
    private readonly NonFiniteTally _nonFinite;
    private readonly IProgress<MergeProgress>? _progress;
    private readonly Stopwatch _clock;
    private readonly int _layerCount;
    private readonly CancellationToken _cancellationToken;

    /// <summary>Elements of the largest merged piece (a whole tensor, or a streamed item's largest block).</summary>
    private readonly long _largest;

    /// <summary>Elements each worker's own buffers hold.</summary>
    private readonly long _capacity;

    /// <summary>Input slots a worker needs (a layout's tensors may have different numbers of sources).</summary>
    private readonly int _slots;

    /// <summary>The items in dispatch order (indices into <see cref="_items"/>).</summary>
    private readonly int[] _order;

    /// <summary>Pieces (whole items or streamed blocks) still to be written, per job.</summary>
    private readonly int[] _piecesLeft;

    private readonly long _bytesTotal;
    private readonly CancellationTokenSource _failed;
    private readonly SemaphoreSlim _largeGate = new(1, 1);
    private readonly Lock _dispatch = new();
    private readonly List<MergeWorker> _owned = [];
    private readonly PieceWriter _pieces;
    private MergeWorker? _large;
    private long _next = -1;
    private long _bytesRead;
    private long _bytesWritten;
    private int _tensorsDone;
    private TimeSpan? _lastReport;
    private ExceptionDispatchInfo? _firstError;

    public MergeScheduler(
        MergePlan plan,
        MergeOptions options,
        Device device,
        TensorPlan tensors,
        IReadOnlyList<MergeWorkItem> items,
        bool streams,
        ShardedSafeTensorsWriter writer,
        NonFiniteTally nonFinite,
        IProgress<MergeProgress>? progress,
        Stopwatch clock,
        CancellationToken cancellationToken)
    {
        _plan = plan;
        _options = options;
        _device = device;
        _jobs = tensors.Jobs;
        _layerCount = tensors.LayerCount;
        _items = items;
        _writer = writer;
        _nonFinite = nonFinite;
        _progress = progress;
        _clock = clock;
        _cancellationToken = cancellationToken;

        // Each worker owns buffers for items up to the block size (whole-tensor strategies: WholeTensorWorkerElements);
        // larger items (whole tensors of a strategy that is not elementwise and does not stream) share one set of large
        // buffers and are processed one at a time, so memory stays at workers x block + one largest tensor, not workers x
        // largest tensor. Streamed items only need block buffers.
        _largest = Math.Max(1, items.Where(i => i.Job.IsMerged)
            .Select(i => i.Blocks is null ? i.ElementCount : i.Blocks.Max(b => b.ElementCount)).DefaultIfEmpty(1).Max());
        // Whole-tensor strategies (neither elementwise nor streaming) are not cut into blocks: their workers' buffers have
        // their own size, so mid-size tensors still run in parallel however small the blocks are.
        var wholeTensors = !plan.Strategy.Traits.Elementwise && !streams;
        _capacity = Math.Min(_largest, Math.Max(1, wholeTensors ? options.WholeTensorWorkerElements : options.BlockElements));
        _slots = _jobs.Count == 0 ? 0 : _jobs.Max(j => j.Inputs.Count);
        _bytesTotal = _jobs.Sum(j => j.OutputBytes);
        _order = DispatchOrder(items);
        _piecesLeft = new int[_jobs.Count];
        foreach (var item in items)
        {
            _piecesLeft[item.Job.Index] += item.Blocks?.Count ?? 1;
        }
        _failed = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        _pieces = new PieceWriter(Write, p => writer.IsAtFrontier(p.Job.Name, p.ElementStart * p.Job.OutputDType.Size), _failed.Cancel, _failed.Token);
    }

    /// <summary>
    /// Merges every item on the calling thread plus <see cref="MergeOptions.MaxParallelism"/> - 1 others, waits for the
    /// writer, and returns the input bytes read and the stage times. Throws the first worker's or the writer's error.
    /// </summary>
    public (long BytesRead, MergeStageTimes Stages) Run()
    {
        var workers = Math.Clamp(_options.MaxParallelism, 1, Math.Max(1, _items.Count));
        long readTicks = 0, mergeTicks = 0, convertTicks = 0, waitTicks = 0;
        var others = Enumerable.Range(1, workers - 1)
            .Select(_ => Task.Factory.StartNew(Work, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default))
            .ToList();
        try
        {
            Work();
            Task.WaitAll(others, CancellationToken.None);
            try
            {
                _pieces.Complete();
            }
            catch (Exception ex)
            {
                Interlocked.CompareExchange(ref _firstError, ExceptionDispatchInfo.Capture(ex), null);
            }
        }
        finally
        {
            if (_firstError is not null || _failed.IsCancellationRequested)
            {
                _failed.Cancel();
            }
            _pieces.Complete(ignoreErrors: true);
            // Workers are disposed only after the writer stopped: their output buffers may still be queued.
            foreach (var w in _large is null ? _owned : [.. _owned, _large])
            {
                var (r, m, c, wait) = w.Ticks;
                readTicks += r;
                mergeTicks += m;
                convertTicks += c;
                waitTicks += wait;
                w.Dispose();
            }
        }
        _firstError?.Throw();
        _cancellationToken.ThrowIfCancellationRequested();
        var stages = new MergeStageTimes(Stopwatch.GetElapsedTime(0, readTicks), Stopwatch.GetElapsedTime(0, mergeTicks),
            Stopwatch.GetElapsedTime(0, convertTicks), Stopwatch.GetElapsedTime(0, waitTicks), _pieces.WriteTime)
        {
            Hash = Stopwatch.GetElapsedTime(0, _writer.HashTicks),
            HashReadBackBytes = _writer.ReadBackBytes,
        };
        return (_bytesRead, stages);
    }

    public void Dispose()
    {
        _failed.Dispose();
        _largeGate.Dispose();
    }

    /// <summary>
    /// Output buffer sets per worker: with small blocks more sets (8 Mi elements in all, at most 8 sets) let a worker run
    /// ahead of the writer thread through its bursts instead of waiting for it; large blocks keep two.
    /// </summary>
    private static int OutputSets(long capacity) => (int)Math.Clamp((8L << 20) / Math.Max(1, capacity), 2, 8);

    /// <summary>
    /// Dispatch order: the largest streamed items (within 4x of the largest, e.g. embed_tokens and lm_head: their
    /// statistics passes read them again) first, largest first, so they run side by side on different workers instead of
    /// one of them ending the merge alone; then the rest in plan order, so most outputs still reach the files near their
    /// hash frontier (hashed from memory, not read back).
    /// </summary>
    private static int[] DispatchOrder(IReadOnlyList<MergeWorkItem> items)
    {
        var largestStreamed = items.Where(i => i.Blocks is { Count: > 1 }).Select(i => i.ElementCount).DefaultIfEmpty(0).Max();
        bool Early(MergeWorkItem i) => i.Blocks is { Count: > 1 } && i.ElementCount * 4 >= largestStreamed;
        return [.. Enumerable.Range(0, items.Count)
            .OrderBy(i => Early(items[i]) ? 0 : 1)
            .ThenByDescending(i => Early(items[i]) ? items[i].ElementCount : 0)
            .ThenBy(i => i)];
    }

    private bool Dispatch(out MergeWorkItem item, out bool isLarge)
    {
        lock (_dispatch)
        {
            var ticket = ++_next;
            if (ticket >= _items.Count)
            {
                (item, isLarge) = (null!, false);
                return false;
            }
            item = _items[_order[ticket]];
            isLarge = item.Job.IsMerged && item.Blocks is null && item.ElementCount > _capacity;
            if (isLarge)
            {
                // Taken in dispatch order while dispatching, so holders of the large buffers follow one another.
                _largeGate.Wait(_failed.Token);
            }
            return true;
        }
    }

    /// <summary>Runs on the writer thread, pieces in the order they were posted: an item's output, or one block of a streamed item.</summary>
    private void Write(MergeWorkItem piece, PendingOutput output)
    {
        var byteOffset = piece.ElementStart * piece.Job.OutputDType.Size;
        TensorBytes.ForEachSpan(output.Result, (span, at) => _writer.WriteAt(piece.Job.Name, byteOffset + at, span));
        _bytesWritten += TensorBytes.ByteLength(output.Result);
        if (--_piecesLeft[piece.Job.Index] == 0)
        {
            _tensorsDone++;
        }
        var now = _clock.Elapsed;
        if (_progress is not null && (_lastReport is null || now - _lastReport >= _options.ProgressInterval || _tensorsDone == _jobs.Count))
        {
            _lastReport = now;
            _progress.Report(new MergeProgress(_tensorsDone, _jobs.Count, Interlocked.Read(ref _bytesRead), _bytesWritten, _bytesTotal, now, piece.Job.Name));
        }
    }

    /// <summary>One worker: takes items until none is left or the merge failed; the first error cancels the others.</summary>
    private void Work()
    {
        var threads = torch.get_num_threads();
        try
        {
            if (_options.TorchThreadsPerWorker > 0)
            {
                torch.set_num_threads(_options.TorchThreadsPerWorker);
            }
            using var noGrad = torch.no_grad();
            var own = new MergeWorker(_plan.Strategy, _device, _slots, _capacity, _plan.Seed, _layerCount, _nonFinite, OutputSets(_capacity));
            lock (_owned)
            {
                _owned.Add(own);
            }
            while (!_failed.IsCancellationRequested && Dispatch(out var item, out var isLarge))
            {
                try
                {
                    var worker = isLarge
                        ? _large ??= new MergeWorker(_plan.Strategy, _device, _slots, _largest, _plan.Seed, _layerCount, _nonFinite, outputSets: 1)
                        : own;
                    Process(worker, item);
                }
                finally
                {
                    if (isLarge)
                    {
                        _largeGate.Release();
                    }
                }
            }
            _failed.Token.ThrowIfCancellationRequested();
        }
        catch (OperationCanceledException) when (_failed.IsCancellationRequested)
        {
            // Another worker failed or the caller cancelled; the first error (if any) is reported.
        }
        catch (Exception ex)
        {
            Interlocked.CompareExchange(ref _firstError, ExceptionDispatchInfo.Capture(ex), null);
            _failed.Cancel();
        }
        finally
        {
            torch.set_num_threads(threads);
        }
    }

    private void Process(MergeWorker worker, MergeWorkItem item)
    {
        using var scope = torch.NewDisposeScope();
        if (item.Blocks is not null)
        {
            worker.ProcessStreamed(item, (block, output) =>
            {
                // Each input byte counts once, though statistics passes read blocks again.
                Interlocked.Add(ref _bytesRead, block.ElementCount * block.Job.InputBytesPerElement);
                output.Result.DetachFromDisposeScope();
                _pieces.Post(block, output);
            }, _failed.Token);
        }
        else
        {
            var output = worker.Process(item, _failed.Token);
            Interlocked.Add(ref _bytesRead, worker.LastBytesRead);
            output.Result.DetachFromDisposeScope();
            _pieces.Post(item, output);
        }
    }
}
