using SensMerging.Zoo.Training;

namespace SensMerging.Zoo.Tests;

/// <summary>Builds the tiny zoo once per test class into a temp folder.</summary>
public sealed class TinyZooFixture : IAsyncLifetime
{
    public const int Seed = 3;

    public string Root { get; } = Path.Combine(Path.GetTempPath(), "zoo-tests-" + Guid.NewGuid().ToString("N"));

    public ZooBuildResult Result { get; private set; } = null!;

    public List<ZooProgress> Progress { get; } = [];

    public double BuildSeconds { get; private set; }

    public async Task InitializeAsync()
    {
        var watch = System.Diagnostics.Stopwatch.StartNew();
        Result = await new ZooBuilder().BuildAsync(Root, Seed, ZooSize.Tiny, new SyncProgress(Progress), CancellationToken.None);
        BuildSeconds = watch.Elapsed.TotalSeconds;
    }

    public Task DisposeAsync()
    {
        if (Directory.Exists(Root))
        {
            Directory.Delete(Root, recursive: true);
        }
        return Task.CompletedTask;
    }

    /// <summary>An IProgress that records on the caller's thread (Progress&lt;T&gt; posts asynchronously).</summary>
    private sealed class SyncProgress(List<ZooProgress> sink) : IProgress<ZooProgress>
    {
        public void Report(ZooProgress value)
        {
            lock (sink)
            {
                sink.Add(value);
            }
        }
    }
}
