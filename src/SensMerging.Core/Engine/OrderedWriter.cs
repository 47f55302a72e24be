using System.Diagnostics;
using System.Runtime.ExceptionServices;

namespace SensMerging.Core.Engine;

/// <summary>
/// Writes work-item outputs in ticket order (and the pieces of one ticket in piece order) on a thread of its own, so
/// workers go on computing while earlier outputs are written. Each output is disposed and its buffers released back to
/// their worker once written. Stops early when the token is cancelled.
/// </summary>
internal sealed class OrderedWriter
{
    private readonly object _lock = new();
    private readonly Dictionary<(long Ticket, int Piece), (MergeWorkItem Piece, PendingOutput Output, bool Last)> _pending = [];
    private readonly Action<long, MergeWorkItem, PendingOutput, bool> _write;
    private readonly long _tickets;
    private readonly CancellationToken _cancellationToken;
    private readonly Thread _thread;
    private ExceptionDispatchInfo? _error;
    private long _writeTicks;

    /// <param name="tickets">Number of tickets (0 to tickets - 1) that will be posted.</param>
    /// <param name="write">Writes one piece: ticket, piece item, output, whether it is the ticket's last piece.</param>
    /// <param name="cancellationToken">Stops the writer (a worker failed or the caller cancelled).</param>
    public OrderedWriter(long tickets, Action<long, MergeWorkItem, PendingOutput, bool> write, CancellationToken cancellationToken)
    {
        _tickets = tickets;
        _write = write;
        _cancellationToken = cancellationToken;
        _thread = new Thread(Loop) { IsBackground = true, Name = "merge-writer" };
        _thread.Start();
    }

    /// <summary>Time spent writing.</summary>
    public TimeSpan WriteTime => Stopwatch.GetElapsedTime(0, Interlocked.Read(ref _writeTicks));

    /// <summary>Hands piece <paramref name="piece"/> of ticket <paramref name="ticket"/> to the writer.</summary>
    public void Post(long ticket, int piece, bool last, MergeWorkItem item, PendingOutput output)
    {
        lock (_lock)
        {
            _pending.Add((ticket, piece), (item, output, last));
            Monitor.PulseAll(_lock);
        }
    }

    /// <summary>Waits until every ticket is written (or the writer stopped) and rethrows a write failure unless told not to.</summary>
    public void Complete(bool ignoreErrors = false)
    {
        _thread.Join();
        if (!ignoreErrors)
        {
            _error?.Throw();
        }
    }

    private void Loop()
    {
        var (ticket, piece) = (0L, 0);
        try
        {
            while (ticket < _tickets)
            {
                (MergeWorkItem Piece, PendingOutput Output, bool Last) next;
                lock (_lock)
                {
                    while (!_pending.Remove((ticket, piece), out next))
                    {
                        if (_cancellationToken.IsCancellationRequested)
                        {
                            return;
                        }
                        Monitor.Wait(_lock, 20);
                    }
                }
                var started = Stopwatch.GetTimestamp();
                try
                {
                    _write(ticket, next.Piece, next.Output, next.Last);
                }
                finally
                {
                    next.Output.Result.Dispose();
                    next.Output.Release();
                }
                Interlocked.Add(ref _writeTicks, Stopwatch.GetTimestamp() - started);
                (ticket, piece) = next.Last ? (ticket + 1, 0) : (ticket, piece + 1);
            }
        }
        catch (Exception ex)
        {
            _error = ExceptionDispatchInfo.Capture(ex);
        }
    }
}
