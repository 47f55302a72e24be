using System.Diagnostics;
using System.Reflection;

namespace SensMerging.Registry.Tests;

public sealed class LifecycleTests
{
    internal static string WorkerPath => typeof(LifecycleTests).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
        .Single(a => a.Key == "RegistryWorkerPath").Value!;

    [Fact]
    public async Task Complete_only_from_running_and_only_with_files_in_place()
    {
        using var temp = new TempFolder();
        using var registry = LiteDbMergeRegistry.Open(temp.File("merges.db"));
        var begun = await registry.BeginAsync(Samples.Draft(temp));
        Assert.Equal(MergeStatus.Running, begun.Status);
        Assert.Null(begun.FinishedAt);

        // Outputs not written yet: refused, record stays running.
        var missing = new MergeOutputs { Folder = temp.File("not-there"), Files = [new FileHash("model.safetensors", new string('a', 64), 10)] };
        await Assert.ThrowsAsync<ArgumentException>(() => registry.CompleteAsync(begun.Id, missing));
        var outputs = Samples.Outputs(temp.File("out"), "x");
        await Assert.ThrowsAsync<ArgumentException>(() => registry.CompleteAsync(begun.Id, outputs with { Files = [outputs.Files[0] with { Size = 1 }] }));
        await Assert.ThrowsAsync<ArgumentException>(() => registry.CompleteAsync(begun.Id, outputs with { Files = [outputs.Files[0] with { Sha256 = "XYZ" }] }));
        await Assert.ThrowsAsync<ArgumentException>(() => registry.CompleteAsync(begun.Id, outputs with { Files = [] }));
        Assert.Equal(MergeStatus.Running, (await registry.GetAsync(begun.Id))!.Status);

        // Update cannot change status.
        await Assert.ThrowsAsync<InvalidOperationException>(() => registry.UpdateAsync(begun.Id, r => r with { Status = MergeStatus.Succeeded }));

        var done = await registry.CompleteAsync(begun.Id, outputs);
        Assert.Equal(MergeStatus.Succeeded, done.Status);
        await Assert.ThrowsAsync<MergeStateException>(() => registry.CompleteAsync(begun.Id, outputs));
        await Assert.ThrowsAsync<MergeStateException>(() => registry.FailAsync(begun.Id, new IOException("late")));
        await Assert.ThrowsAsync<MergeNotFoundException>(() => registry.CompleteAsync("m-unknown", outputs));
    }

    [Fact]
    public async Task Failure_and_cancellation_are_recorded_with_the_error()
    {
        using var temp = new TempFolder();
        using var registry = LiteDbMergeRegistry.Open(temp.File("merges.db"));
        var a = await registry.BeginAsync(Samples.Draft(temp));
        var failed = await registry.FailAsync(a.Id, new InvalidDataException("tensor 'x' has shape [2] in base but [3] in expert"));
        Assert.Equal(MergeStatus.Failed, failed.Status);
        Assert.Equal(typeof(InvalidDataException).FullName, failed.Error!.Type);
        Assert.Contains("shape [2]", failed.Error.Message, StringComparison.Ordinal);
        Assert.NotNull(failed.FinishedAt);
        Assert.Null(failed.Outputs);

        var b = await registry.BeginAsync(Samples.Draft(temp));
        Assert.Equal(MergeStatus.Cancelled, (await registry.FailAsync(b.Id, new OperationCanceledException())).Status);
        var c = await registry.BeginAsync(Samples.Draft(temp));
        var cancelled = await registry.CancelAsync(c.Id, "Ctrl-C");
        Assert.Equal((MergeStatus.Cancelled, "Ctrl-C"), (cancelled.Status, cancelled.Error!.Message));
        // A second failure report keeps the first outcome.
        Assert.Equal(MergeStatus.Cancelled, (await registry.FailAsync(c.Id, new IOException("x"))).Status);
    }

    [Fact]
    public async Task A_merge_whose_process_was_killed_becomes_failed_never_succeeded()
    {
        using var temp = new TempFolder();
        var db = temp.File("merges.db");
        using (LiteDbMergeRegistry.Open(db))
        {
        }
        using var worker = Process.Start(new ProcessStartInfo("dotnet", ["exec", WorkerPath, "hang", db]) { RedirectStandardOutput = true, RedirectStandardError = true })!;
        var line = await worker.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(30));
        Assert.StartsWith("begun ", line, StringComparison.Ordinal);
        var id = line!["begun ".Length..];

        using var registry = LiteDbMergeRegistry.Open(db);
        // Its process is alive: it stays running.
        Assert.Empty(await registry.MarkAbandonedAsync());
        Assert.Equal(MergeStatus.Running, (await registry.GetAsync(id))!.Status);
        Assert.Equal(worker.Id, (await registry.GetAsync(id))!.Owner!.ProcessId);

        worker.Kill();
        await worker.WaitForExitAsync();
        var list = await registry.ListAsync(new MergeQuery());
        var summary = Assert.Single(list);
        Assert.Equal(MergeStatus.Failed, summary.Status);
        var record = (await registry.GetAsync(id))!;
        Assert.Equal(MergeStatus.Failed, record.Status);
        Assert.Equal("ProcessEnded", record.Error!.Type);
        Assert.Contains("process ended while merging", record.Error.Message, StringComparison.Ordinal);
        Assert.Null(record.Outputs);
        // It can no longer be completed.
        await Assert.ThrowsAsync<MergeStateException>(() => registry.CompleteAsync(id, Samples.Outputs(temp.File("o"), "o")));
    }

    [Fact]
    public async Task A_killed_merges_partial_folder_is_removed_with_its_record_but_only_when_named_like_one()
    {
        using var temp = new TempFolder();
        var db = temp.File("merges.db");
        using (LiteDbMergeRegistry.Open(db))
        {
        }
        var partial = Directory.CreateDirectory(temp.File("out.partial-0123456789ab")).FullName;
        File.WriteAllText(Path.Combine(partial, "model-00001-of-00002.safetensors"), "half");
        var precious = Directory.CreateDirectory(temp.File("precious")).FullName;
        File.WriteAllText(Path.Combine(precious, "keep.txt"), "mine");
        var gone = temp.File("never.partial-ba9876543210");
        var ids = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var folder in new[] { partial, precious, gone })
        {
            using var worker = Process.Start(new ProcessStartInfo("dotnet", ["exec", WorkerPath, "hang", db, folder]) { RedirectStandardOutput = true, RedirectStandardError = true })!;
            var line = await worker.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(30));
            Assert.StartsWith("begun ", line, StringComparison.Ordinal);
            ids[folder] = line!["begun ".Length..];
            worker.Kill();
            await worker.WaitForExitAsync();
        }

        // Each worker's open closed the records of the workers killed before it; this closes the last one.
        using var registry = LiteDbMergeRegistry.Open(new RegistryOptions { Path = db, MarkAbandoned = false });
        Assert.Equal([ids[gone]], await registry.MarkAbandonedAsync());
        foreach (var id in ids.Values)
        {
            Assert.Equal(MergeStatus.Failed, (await registry.GetAsync(id))!.Status);
        }

        var removed = (await registry.GetAsync(ids[partial]))!;
        Assert.Equal(("ProcessEnded", partial), (removed.Error!.Type, removed.PartialFolder));
        Assert.EndsWith($"; its partial output folder '{partial}' was removed", removed.Error.Message, StringComparison.Ordinal);
        Assert.False(Directory.Exists(partial));

        var kept = (await registry.GetAsync(ids[precious]))!;
        Assert.Contains($"its recorded partial output folder '{precious}' is not named like one", kept.Error!.Message, StringComparison.Ordinal);
        Assert.Equal("mine", File.ReadAllText(Path.Combine(precious, "keep.txt")));

        Assert.EndsWith($"; its partial output folder '{gone}' was not there", (await registry.GetAsync(ids[gone]))!.Error!.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_running_merge_of_this_process_is_not_abandoned()
    {
        using var temp = new TempFolder();
        using var registry = LiteDbMergeRegistry.Open(temp.File("merges.db"));
        var begun = await registry.BeginAsync(Samples.Draft(temp));
        Assert.Empty(await registry.MarkAbandonedAsync());
        using var other = LiteDbMergeRegistry.Open(temp.File("merges.db"));
        Assert.Equal(MergeStatus.Running, (await other.GetAsync(begun.Id))!.Status);
    }
}
