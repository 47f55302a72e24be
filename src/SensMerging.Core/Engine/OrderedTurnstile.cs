namespace SensMerging.Core.Engine;

/// <summary>Lets workers that finish items out of order write them in order: ticket k waits until k-1 has written.</summary>
internal sealed class OrderedTurnstile
{
    private readonly object _lock = new();
    private long _turn;

    public void WaitTurn(long ticket, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            while (_turn != ticket)
            {
                cancellationToken.ThrowIfCancellationRequested();
                Monitor.Wait(_lock, 20);
            }
        }
    }

    public void Advance()
    {
        lock (_lock)
        {
            _turn++;
            Monitor.PulseAll(_lock);
        }
    }
}
