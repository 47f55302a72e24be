using System.Globalization;

namespace SensMerging.Bench;

/// <summary>Samples RssAnon from /proc/self/status on a background thread and keeps the maximum since the last reset.</summary>
internal sealed class RssAnonSampler : IDisposable
{
    private readonly Thread _thread;
    private readonly CancellationTokenSource _stop = new();
    private long _peakKb;

    public RssAnonSampler()
    {
        _thread = new Thread(Loop) { IsBackground = true, Name = "rss-anon-sampler" };
        _thread.Start();
    }

    /// <summary>Peak RssAnon in bytes since the last <see cref="Reset"/>.</summary>
    public long PeakBytes
    {
        get
        {
            Sample();
            return Interlocked.Read(ref _peakKb) * 1024;
        }
    }

    public static long CurrentKb()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
        {
            if (line.StartsWith("RssAnon:", StringComparison.Ordinal))
            {
                return long.Parse(line.AsSpan(8).Trim().TrimEnd("kB").Trim(), CultureInfo.InvariantCulture);
            }
        }
        return 0;
    }

    public void Reset() => Interlocked.Exchange(ref _peakKb, CurrentKb());

    public void Dispose()
    {
        _stop.Cancel();
        _thread.Join();
        _stop.Dispose();
    }

    private void Loop()
    {
        while (!_stop.IsCancellationRequested)
        {
            Sample();
            _stop.Token.WaitHandle.WaitOne(10);
        }
    }

    private void Sample()
    {
        var now = CurrentKb();
        long seen;
        while (now > (seen = Interlocked.Read(ref _peakKb)) && Interlocked.CompareExchange(ref _peakKb, now, seen) != seen)
        {
        }
    }
}
