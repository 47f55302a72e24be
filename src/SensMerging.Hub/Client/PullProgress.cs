namespace SensMerging.Hub.Client;

/// <summary>One pull's byte and file counts, reported to the caller's progress as files are found cached, start, grow and complete.</summary>
internal sealed class PullProgress(long overallTotal, IProgress<HubPullProgress>? progress)
{
    private long _overall;
    private long _bytesDownloaded;
    private int _filesDownloaded;

    public long BytesDownloaded => Interlocked.Read(ref _bytesDownloaded);

    public int FilesDownloaded => Volatile.Read(ref _filesDownloaded);

    public void Cached(string path, long size)
    {
        var overall = Interlocked.Add(ref _overall, size);
        progress?.Report(new HubPullProgress(path, HubPullFileState.Cached, size, size, overall, overallTotal));
    }

    public void Started(string path, long already, long size)
    {
        var overall = Interlocked.Add(ref _overall, already);
        progress?.Report(new HubPullProgress(path, HubPullFileState.Started, already, size, overall, overallTotal));
    }

    public void Progress(string path, long fileBytes, long size, int delta)
    {
        Interlocked.Add(ref _bytesDownloaded, delta);
        var overall = Interlocked.Add(ref _overall, delta);
        progress?.Report(new HubPullProgress(path, HubPullFileState.Downloading, fileBytes, size, overall, overallTotal));
    }

    public void Completed(string path, long size, long received)
    {
        Interlocked.Increment(ref _filesDownloaded);
        progress?.Report(new HubPullProgress(path, HubPullFileState.Completed, size, size, Interlocked.Read(ref _overall), overallTotal));
    }
}
