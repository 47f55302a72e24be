using System.Security.Cryptography;
using SensMerging.Host.Tests.Cli;
using SensMerging.Registry;

namespace SensMerging.Host.Tests.Merging;

/// <summary>
/// The output-folder rules, on real folders with a real <c>sensmerge merge</c>: <c>--overwrite</c> never deletes an input
/// or the config, an existing output is refused before a registry record is written, two merges never write one folder,
/// and a killed merge's partial folder goes when its record is closed.
/// </summary>
[Collection(ProcessTimingCollection.Name)]
public sealed class OutputFolderTests : IDisposable
{
    private readonly string _root = TestPaths.NewTempDir("outfolder");
    private readonly string _registry;
    private readonly string _plugins = Path.Combine(TestPaths.RepoRoot, "plugins.json");

    public OutputFolderTests() => _registry = Path.Combine(_root, "registry", "merges.db");

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private Task<(int ExitCode, string StdOut, string StdErr)> SensMerge(params string[] args) =>
        Processes.SensMergeAsync([.. args, "--plugins", _plugins, "--registry", _registry]);

    /// <summary>SHA-256 of every file under <paramref name="folder"/>, by path.</summary>
    private static Dictionary<string, string> Snapshot(string folder) =>
        Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories)
            .ToDictionary(f => f, f => Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(f))), StringComparer.Ordinal);

    private async Task<int> RecordCount()
    {
        if (!File.Exists(_registry))
        {
            return 0;
        }
        using var registry = LiteDbMergeRegistry.Open(new RegistryOptions { Path = _registry, MarkAbandoned = false });
        return (await registry.ListAsync(MergeQuery.All)).Count;
    }

    private string[] Leftovers(string parent) =>
        [.. Directory.GetFileSystemEntries(parent, "*.partial-*"), .. Directory.GetFileSystemEntries(parent, "*.lock")];

    [Theory]
    [InlineData("folder holding the inputs", "contains the input model folder")]
    [InlineData("the base model folder", "is the input model folder")]
    [InlineData("inside the base model folder", "lies inside the input model folder")]
    [InlineData("the config's folder", "is the config file's folder")]
    [InlineData("a link to the folder holding the inputs", "contains the input model folder")]
    public async Task Overwrite_refuses_an_output_folder_overlapping_the_inputs_before_any_work_and_deletes_nothing(string layout, string refusal)
    {
        // The layout: one folder holding base/ and experts/, the config in a folder of its own.
        var work = Path.Combine(_root, "work");
        var baseDir = Path.Combine(work, "base");
        var weights = TinyModels.Write(baseDir, 1);
        var a = Path.Combine(work, "experts", "a");
        TinyModels.Write(a, 2, weights);
        var configs = Directory.CreateDirectory(Path.Combine(_root, "configs")).FullName;
        var config = Path.Combine(configs, "ta.yaml");
        File.WriteAllText(config, $"merge_method: task_arithmetic\nbase_model: {baseDir}\nmodels:\n  - model: {a}\n");
        var link = Path.Combine(_root, "link");
        Directory.CreateSymbolicLink(link, work);
        var (output, named) = layout switch
        {
            "folder holding the inputs" => (work, baseDir),
            "the base model folder" => (baseDir, baseDir),
            "inside the base model folder" => (Path.Combine(baseDir, "merged"), baseDir),
            "the config's folder" => (configs, configs),
            _ => (link, baseDir),
        };
        var before = Snapshot(work).Concat(Snapshot(configs)).ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);

        var (exit, stdout, stderr) = await SensMerge("merge", config, "--out", output, "--overwrite");

        Assert.True(exit == 1, $"exit {exit}:\n{stderr}{stdout}");
        Assert.Contains($"output folder '{output}'", stderr, StringComparison.Ordinal);
        Assert.Contains(refusal, stderr, StringComparison.Ordinal);
        Assert.Contains($"'{named}'", stderr, StringComparison.Ordinal);
        if (output == link)
        {
            Assert.Contains($"(real path '{work}')", stderr, StringComparison.Ordinal);
        }
        var after = Snapshot(work).Concat(Snapshot(configs)).ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
        Assert.Equal(before, after);
        Assert.Equal(0, await RecordCount());
        Assert.Empty(Leftovers(_root));
        Assert.Empty(Leftovers(work));
    }

    [Fact]
    public async Task A_non_empty_output_folder_without_overwrite_is_refused_before_a_record_is_written()
    {
        var baseDir = Path.Combine(_root, "models", "base");
        var weights = TinyModels.Write(baseDir, 1);
        var a = Path.Combine(_root, "models", "a");
        TinyModels.Write(a, 2, weights);
        var config = Path.Combine(_root, "ta.yaml");
        File.WriteAllText(config, $"merge_method: task_arithmetic\nbase_model: {baseDir}\nmodels:\n  - model: {a}\n");
        var output = Directory.CreateDirectory(Path.Combine(_root, "out")).FullName;
        File.WriteAllText(Path.Combine(output, "keep.txt"), "mine");

        var (exit, stdout, stderr) = await SensMerge("merge", config, "--out", output);

        Assert.True(exit == 1, $"exit {exit}:\n{stderr}{stdout}");
        Assert.Contains($"output folder '{output}' already exists and is not empty", stderr, StringComparison.Ordinal);
        Assert.Equal("mine", File.ReadAllText(Path.Combine(output, "keep.txt")));
        Assert.Equal(0, await RecordCount());
        Assert.Empty(Leftovers(_root));
    }

    [Fact]
    public async Task A_second_merge_into_the_same_output_folder_fails_at_once_and_the_first_completes()
    {
        // The first merge must outlast the second one's start-up (a few seconds on a busy machine): about 10 s.
        var (config, _, _) = SlowMerge.Write(Path.Combine(_root, "models"));
        var plugins = SlowMerge.PluginsFile(_root, delayMs: 1000);
        var output = Path.Combine(_root, "out");
        using var first = SensMergeProcess.Start(["merge", config, "--out", output, "--plugins", plugins, "--registry", _registry]);
        Assert.True(await first.UntilAsync(() => Task.FromResult(Directory.GetDirectories(_root, "out.partial-*").Length > 0), TimeSpan.FromSeconds(60)),
            "the first merge never started writing: " + first.StdErr);

        var (exit, stdout, stderr) = await Processes.SensMergeAsync("merge", config, "--out", output, "--plugins", plugins, "--registry", _registry);

        Assert.True(exit == 1, $"exit {exit}:\n{stderr}{stdout}");
        Assert.Contains($"output folder '{output}' is being written by another merge (it holds '{output}.lock')", stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("stays", stderr, StringComparison.Ordinal);
        Assert.False(first.HasExited, "the first merge ended before the second was refused: " + first.StdErr);
        Assert.True(await first.WaitForExitAsync(TimeSpan.FromSeconds(60)), "the first merge did not finish: " + first.StdErr);
        Assert.True(first.ExitCode == 0, $"first merge exit {first.ExitCode}:\n{first.StdErr}");
        Assert.True(File.Exists(Path.Combine(output, "model.safetensors")));
        using var registry = LiteDbMergeRegistry.Open(new RegistryOptions { Path = _registry });
        Assert.Equal(MergeStatus.Succeeded, Assert.Single(await registry.ListAsync(MergeQuery.All)).Status);
        Assert.Empty(Leftovers(_root));
    }

    [Fact]
    public async Task A_killed_merges_partial_folder_is_named_in_its_ProcessEnded_record_and_removed()
    {
        var (config, _, _) = SlowMerge.Write(Path.Combine(_root, "models"));
        var output = Path.Combine(_root, "killed");
        using var merge = SensMergeProcess.Start(["merge", config, "--out", output, "--plugins", SlowMerge.PluginsFile(_root), "--registry", _registry]);
        Assert.True(await merge.UntilAsync(() => Task.FromResult(Directory.GetDirectories(_root, "killed.partial-*").Length > 0), TimeSpan.FromSeconds(60)),
            "the merge never started writing: " + merge.StdErr);
        var partial = Assert.Single(Directory.GetDirectories(_root, "killed.partial-*"));

        await merge.SignalAsync("KILL");
        Assert.True(await merge.WaitForExitAsync(TimeSpan.FromSeconds(20)));
        Assert.True(Directory.Exists(partial), "nothing cleans up after SIGKILL until the record is closed");

        using var registry = LiteDbMergeRegistry.Open(new RegistryOptions { Path = _registry, MarkAbandoned = false });
        var id = Assert.Single(await registry.MarkAbandonedAsync());
        var record = (await registry.GetAsync(id))!;
        Assert.Equal(MergeStatus.Failed, record.Status);
        Assert.Equal("ProcessEnded", record.Error!.Type);
        Assert.Contains($"its partial output folder '{partial}' was removed", record.Error.Message, StringComparison.Ordinal);
        Assert.False(Directory.Exists(partial));
        Assert.False(Directory.Exists(output));
    }
}
