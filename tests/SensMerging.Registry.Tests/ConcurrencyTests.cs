using System.Diagnostics;

namespace SensMerging.Registry.Tests;

public sealed class ConcurrencyTests
{
    [Fact]
    public async Task Two_processes_writing_while_this_one_reads_lose_no_record()
    {
        using var temp = new TempFolder();
        var db = temp.File("merges.db");
        using var registry = LiteDbMergeRegistry.Open(db);
        const int perWorker = 15;
        var workers = new[] { "alpha", "beta" }.Select(tag => Process.Start(new ProcessStartInfo("dotnet", ["exec", LifecycleTests.WorkerPath, "write", db, perWorker.ToString(System.Globalization.CultureInfo.InvariantCulture), tag])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        })!).ToList();

        // Meanwhile this process writes and reads too.
        var own = new List<string>();
        var reads = 0;
        while (workers.Any(w => !w.HasExited))
        {
            var rec = await registry.BeginAsync(Samples.Draft(temp, "linear", ["org/x"]));
            own.Add(rec.Id);
            await registry.CancelAsync(rec.Id, "test");
            var listed = await registry.ListAsync(new MergeQuery { Limit = 20 });
            Assert.NotEmpty(listed);
            reads++;
        }
        foreach (var w in workers)
        {
            await w.WaitForExitAsync();
            var stderr = await w.StandardError.ReadToEndAsync();
            var stdout = await w.StandardOutput.ReadToEndAsync();
            Assert.True(w.ExitCode == 0, $"worker failed ({w.ExitCode}): {stderr} {stdout}");
            Assert.Contains("done " + perWorker, stdout, StringComparison.Ordinal);
            w.Dispose();
        }

        var all = await registry.ListAsync(MergeQuery.All);
        Assert.Equal((2 * perWorker) + own.Count, all.Count);
        Assert.Equal(perWorker, all.Count(s => s.Tags.Contains("alpha") && s.Status == MergeStatus.Succeeded));
        Assert.Equal(perWorker, all.Count(s => s.Tags.Contains("beta") && s.Status == MergeStatus.Succeeded));
        Assert.All(own, id => Assert.Contains(all, s => s.Id == id && s.Status == MergeStatus.Cancelled));
        Assert.True(reads > 0);
        // Every record is whole: summary and full record agree.
        foreach (var s in all.Where(s => s.Tags.Contains("alpha")))
        {
            var r = (await registry.GetAsync(s.Id))!;
            Assert.Single(r.ScoreTables);
            Assert.NotNull(r.Outputs);
        }
    }

    [Fact]
    public async Task Threads_sharing_one_registry_serialize_updates_of_a_record()
    {
        using var temp = new TempFolder();
        using var registry = LiteDbMergeRegistry.Open(temp.File("merges.db"));
        var rec = await registry.BeginAsync(Samples.Draft(temp));
        await Task.WhenAll(Enumerable.Range(0, 4).Select(t => Task.Run(async () =>
        {
            for (var i = 0; i < 10; i++)
            {
                await registry.UpdateAsync(rec.Id, r => r with { Tags = [.. r.Tags, $"t{t}-{i}"] });
            }
        })));
        var back = (await registry.GetAsync(rec.Id))!;
        Assert.Equal(rec.Tags.Count + 40, back.Tags.Count);
    }
}
