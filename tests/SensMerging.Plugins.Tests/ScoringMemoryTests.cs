using System.Globalization;
using Microsoft.Extensions.Logging.Abstractions;
using SensMerging.Abstractions;
using SensMerging.Scorers;
using Xunit.Abstractions;

namespace SensMerging.Plugins.Tests;

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class MemoryCollection
{
    public const string Name = "memory (runs alone)";
}

/// <summary>
/// Memory while scoring must not grow with the number of calibration samples: one sample's activations at a time.
/// Measures the process's resident set (VmRSS) and its peak (VmHWM) around sensitivity runs with m = 10 and m = 100.
/// </summary>
[Collection(MemoryCollection.Name)]
public sealed class ScoringMemoryTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempFolder _folder = new();

    public void Dispose() => _folder.Dispose();

    private static (long Rss, long Peak) Memory()
    {
        long rss = 0, peak = 0;
        foreach (var line in File.ReadLines("/proc/self/status"))
        {
            static long Kib(string l) => long.Parse(l.Split(':')[1].Trim().Split(' ')[0], CultureInfo.InvariantCulture) * 1024;
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
            {
                rss = Kib(line);
            }
            else if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
            {
                peak = Kib(line);
            }
        }
        return (rss, peak);
    }

    [Fact]
    public async Task SensitivityMemory_DoesNotGrowWithSampleCount()
    {
        // Hidden 256, 128-token samples: each sample's graph holds a few MiB of activations, so keeping 100 of them
        // alive would add hundreds of MiB.
        var path = TinyModelFiles.Write(_folder.Sub("model"), TinyModelFiles.Random(5, hidden: 256));
        var rng = new Random(3);
        var words = Data.Math.Concat(Data.Code).Concat(Data.Chat).ToArray();
        var samples = Enumerable.Range(0, 100)
            .Select(_ => new TextSample(string.Join(' ', Enumerable.Range(0, 12).Select(_ => words[rng.Next(words.Length)]))))
            .ToArray();
        var experts = new[] { new ScoredModel("big", path, new TextDataset("mixed", "/calibration/mixed.jsonl", samples, 128)) };
        var scorer = new SensitivityScorer();

        async Task<(double Seconds, long RssGrowth, long Peak)> Run(long m)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
            var before = Memory();
            var context = new ScoringContext
            {
                Models = experts,
                Runtime = new TinyRuntime(),
                Parameters = TestScorerCatalog.Resolve(scorer.Parameters, new Dictionary<string, object> { ["samples"] = m, ["max_length"] = 128L }),
                Logger = NullLogger.Instance,
            };
            var table = await scorer.ScoreAsync(context, CancellationToken.None);
            var after = Memory();
            Assert.Equal(m, (long)table.Details["samples"]);
            return (table.Details["seconds"], after.Rss - before.Rss, after.Peak);
        }

        await Run(10); // warm-up: libtorch allocator, JIT
        var ten = await Run(10);
        var hundred = await Run(100);
        const double MiB = 1024 * 1024;
        output.WriteLine($"m=10:  {ten.Seconds:F2} s, RSS growth {ten.RssGrowth / MiB:F1} MiB, process peak {ten.Peak / MiB:F1} MiB");
        output.WriteLine($"m=100: {hundred.Seconds:F2} s, RSS growth {hundred.RssGrowth / MiB:F1} MiB, process peak {hundred.Peak / MiB:F1} MiB");
        // Ten times the samples may not raise the peak by more than noise (32 MiB; keeping every sample's graph adds about 90 MiB here); leaking graphs would add far more.
        Assert.True(hundred.Peak - ten.Peak < 32 * MiB, $"peak grew by {(hundred.Peak - ten.Peak) / MiB:F1} MiB from m=10 to m=100");
    }
}
