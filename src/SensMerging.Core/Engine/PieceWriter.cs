using System.Diagnostics;
using System.Runtime.ExceptionServices;

namespace SensMerging.Core.Engine;

/// <summary>
/// Writes work-item outputs on a thread of its own, in the order they are posted (not the plan's order): each piece goes
/// to its known place in the output files (positioned writes), so no worker waits for another worker's earlier tensor.
/// A piece that arrives just ahead of the files' hash frontier (the other worker's earlier block is still being computed)
/// is held back, up to a few pieces per worker (all but two of its output sets), and written once the frontier reaches
/// it, so it is hashed from memory instead of read back from the file; past that limit the worker's oldest held piece is
/// written anyway (its buffers go back to the worker).
/// Each output is disposed and its buffers released back to their worker once written. Stops early when the token is
/// cancelled.
/// </summary>
internal sealed class PieceWriter
{
    private readonly object _lock = new();
    private readonly Queue<(MergeWorkItem Piece, PendingOutput Output)> _queue = new();
    private readonly List<(MergeWorkItem Piece, PendingOutput Output)> _held = [];
    private readonly Action<MergeWorkItem, PendingOutput> _write;
    private readonly Func<MergeWorkItem, bool> _atFrontier;
    private readonly Action _failed;
    private readonly CancellationToken _cancellationToken;
    private readonly Thread _thread;
    private bool _adding = true;
    private ExceptionDispatchInfo? _error;
    private long _writeTicks;

    /// <param name="write">Writes one piece (an item's output, or one block of a streamed item) at its place.</param>
    /// <param name="atFrontier">Whether a piece would start at its file's hash frontier now.</param>
    /// <param name="failed">Called once when a write fails (so workers waiting for output buffers stop too).</param>
    /// <param name="cancellationToken">Stops the writer (a worker failed or the caller cancelled).</param>
    public PieceWriter(Action<MergeWorkItem, PendingOutput> write, Func<MergeWorkItem, bool> atFrontier, Action failed, CancellationToken cancellationToken)
    {
        _write = write;
        _atFrontier = atFrontier;
        _failed = failed;
        _cancellationToken = cancellationToken;
        _thread = new Thread(Loop) { IsBackground = true, Name = "merge-writer" };
        _thread.Start();
    }

    /// <summary>Time spent writing (and hashing).</summary>
    public TimeSpan WriteTime => Stopwatch.GetElapsedTime(0, Interlocked.Read(ref _writeTicks));

    /// <summary>Hands a piece to the writer; its output set is released once the piece is written (or the writer stopped).</summary>
    public void Post(MergeWorkItem piece, PendingOutput output)
    {
        lock (_lock)
        {
            if (!_adding)
            {
                throw new InvalidOperationException("the writer is already complete");
            }
            _queue.Enqueue((piece, output));
            Monitor.Pulse(_lock);
        }
    }

    /// <summary>Waits until every posted piece is written (or the writer stopped) and rethrows a write failure unless told not to.</summary>
    public void Complete(bool ignoreErrors = false)
    {
        lock (_lock)
        {
            _adding = false;
            Monitor.Pulse(_lock);
        }
        _thread.Join();
        // Pieces left after a stop: free them so nothing native leaks.
        lock (_lock)
        {
            while (_queue.TryDequeue(out var left))
            {
                left.Output.Result.Dispose();
                left.Output.Release();
            }
        }
        foreach (var left in _held)
        {
            left.Output.Result.Dispose();
            left.Output.Release();
        }
        _held.Clear();
        if (!ignoreErrors)
        {
            _error?.Throw();
        }
    }

    private void Loop()
    {
        try
        {
            while (true)
            {
                (MergeWorkItem Piece, PendingOutput Output) next;
                var drained = false;
                lock (_lock)
                {
                    while (!_queue.TryDequeue(out next))
                    {
                        if (_cancellationToken.IsCancellationRequested)
                        {
                            return;
                        }
                        if (!_adding)
                        {
                            drained = true;
                            break;
                        }
                        Monitor.Wait(_lock, 20);
                    }
                }
                if (drained)
                {
                    // Everything is posted: the held pieces go out in their order of arrival.
                    while (_held.Count > 0 && !_cancellationToken.IsCancellationRequested)
                    {
                        WriteHeld(0);
                    }
                    return;
                }
                var set = next.Output.Set;
                if (set.Holdable > 0 && !_atFrontier(next.Piece))
                {
                    // Held per owner: never more than its Holdable sets, so the worker always has buffers to go on with.
                    _held.Add(next);
                    if (_held.Count(h => h.Output.Set.Owner == set.Owner) > set.Holdable)
                    {
                        WriteHeld(_held.FindIndex(h => h.Output.Set.Owner == set.Owner));
                    }
                    continue;
                }
                WriteOne(next);
                // The frontier moved: held pieces it reached are hashed from memory now.
                for (var i = 0; i < _held.Count;)
                {
                    if (_atFrontier(_held[i].Piece))
                    {
                        WriteHeld(i);
                        i = 0;
                    }
                    else
                    {
                        i++;
                    }
                }
            }
        }
        catch (Exception ex)
        {
            _error = ExceptionDispatchInfo.Capture(ex);
            _failed();
        }
    }

    private void WriteHeld(int index)
    {
        var piece = _held[index];
        _held.RemoveAt(index);
        WriteOne(piece);
    }

    private void WriteOne((MergeWorkItem Piece, PendingOutput Output) next)
    {
        var started = Stopwatch.GetTimestamp();
        try
        {
            if (!_cancellationToken.IsCancellationRequested)
            {
                _write(next.Piece, next.Output);
            }
        }
        finally
        {
            next.Output.Result.Dispose();
            next.Output.Release();
        }
        Interlocked.Add(ref _writeTicks, Stopwatch.GetTimestamp() - started);
    }
}
