using SensMerging.Host.Demo;
using SensMerging.Registry;

namespace SensMerging.Host.Tests.Demo;

/// <summary>The README's main job on a reduced zoo (seconds), through the same path as the default run.</summary>
public sealed class DemoCommandTests : IDisposable
{
    private readonly string _root = TestPaths.NewTempDir("demo");

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private Task<(int ExitCode, string StdOut, string StdErr)> Demo(params string[] extra) => Processes.RunAsync("dotnet",
        [TestPaths.HostDll, "demo", "--root", _root, "--size", "tiny", "--eval-samples", "12", "--calibration-samples", "8",
         "--methods", "task_arithmetic", "ties", "--plugins", Path.Combine(TestPaths.RepoRoot, "plugins.json"), "--registry", Path.Combine(_root, "merges.db"), .. extra],
        environment: new Dictionary<string, string> { ["HF_HUB_CACHE"] = Path.Combine(_root, "hf-cache") });

    [Fact]
    public async Task An_out_of_range_lambda_is_refused_by_name_before_any_work()
    {
        var (exit, stdout, stderr) = await Demo("--lambda", "0");
        Assert.NotEqual(0, exit);
        Assert.Contains("--lambda", stderr + stdout, StringComparison.Ordinal);
        Assert.False(Directory.Exists(Path.Combine(_root, "seed-1")), "a zoo was built although the options were invalid");
    }

    [Fact]
    public async Task Tiny_demo_runs_end_to_end_and_a_second_run_reuses_the_zoo_and_the_cache()
    {
        var (exit, stdout, stderr) = await Demo();
        Assert.True(exit == 0, stderr + stdout);
        foreach (var row in new[] { "base", "expert:math", "expert:code", "expert:knowledge", "task_arithmetic", "sens(task_arithmetic)", "sens-task(ties)", "sens-cross(ties)" })
        {
            Assert.Contains(row, stdout, StringComparison.Ordinal);
        }
        Assert.Contains("average", stdout, StringComparison.Ordinal);
        var results = File.ReadAllText(Path.Combine(_root, "demo", "results.md"));
        Assert.Contains("| sens(ties) |", results, StringComparison.Ordinal);
        Assert.Contains("retention average", results, StringComparison.Ordinal);
        // Every merged row has a retention figure (a percentage or n/a where a barely trained tiny expert does not beat the base); base and experts have none.
        Assert.Matches(@"\| ties \|( [^|]+ \|){4}( (-?[0-9]+%|n/a) \|){4}", results);
        Assert.Matches(@"\| base \|( [^|]+ \|){4}( — \|){4}", results);
        foreach (var png in new[] { "results.png", "coefficients.png" })
        {
            var bytes = File.ReadAllBytes(Path.Combine(_root, "demo", png));
            Assert.True(bytes.Length > 1000 && bytes[1] == 'P' && bytes[2] == 'N' && bytes[3] == 'G', png);
        }
        Assert.True(Directory.Exists(Path.Combine(_root, "hf-cache", "models--zoo--base", "snapshots")), "the experts were not pulled into the Hub cache");

        using (var registry = LiteDbMergeRegistry.Open(new RegistryOptions { Path = Path.Combine(_root, "merges.db") }))
        {
            var merges = await registry.ListAsync(MergeQuery.All);
            Assert.Equal(8, merges.Count);
            Assert.All(merges, m => Assert.Equal(MergeStatus.Succeeded, m.Status));
            foreach (var merge in merges)
            {
                var record = (await registry.GetAsync(merge.Id))!;
                Assert.Equal(6, record.Evaluations.Count); // 3 tasks x (exact match, perplexity)
                Assert.All(record.Inputs, i => Assert.Matches("^[0-9a-f]{40}$", i.ResolvedCommit!));
                if (merge.Decorators.Count > 0)
                {
                    Assert.NotNull(record.Coefficients);
                }
                // The summing method takes the demo's lambda; the ties family keeps 1 (its disjoint mean sets the scale).
                var expectedLambda = merge.Method.Contains("task_arithmetic", StringComparison.Ordinal) ? DemoOptions.DefaultLambda : 1.0;
                Assert.Equal(expectedLambda, record.Parameters["lambda"].AsDouble);
            }
        }

        var second = await Demo("--lambda", "0.25");
        Assert.True(second.ExitCode == 0, second.StdErr + second.StdOut);
        Assert.Contains("Reusing the zoo", second.StdErr + second.StdOut, StringComparison.Ordinal);
        Assert.Contains("(0 bytes downloaded", second.StdErr + second.StdOut, StringComparison.Ordinal);
        using (var registry = LiteDbMergeRegistry.Open(new RegistryOptions { Path = Path.Combine(_root, "merges.db") }))
        {
            var merges = await registry.ListAsync(MergeQuery.All);
            Assert.Equal(16, merges.Count);
            var lambdas = await Task.WhenAll(merges.Select(async m => (await registry.GetAsync(m.Id))!.Parameters["lambda"].AsDouble));
            Assert.Equal(4, lambdas.Count(l => l == 0.25));
        }

        // Only the asked variants run; a zoo settings file (the zoo.json form) is honoured and reused like a preset.
        var settingsFile = Path.Combine(_root, "zoo-settings.json");
        var manifest = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(_root, "seed-1", "zoo.json")))!;
        File.WriteAllText(settingsFile, manifest["settings"]!.ToJsonString());
        var third = await Demo("--variants", "plain", "--zoo-settings", settingsFile);
        Assert.True(third.ExitCode == 0, third.StdErr + third.StdOut);
        Assert.Contains("Reusing the zoo", third.StdErr + third.StdOut, StringComparison.Ordinal);
        using (var registry = LiteDbMergeRegistry.Open(new RegistryOptions { Path = Path.Combine(_root, "merges.db") }))
        {
            Assert.Equal(18, (await registry.ListAsync(MergeQuery.All)).Count);
        }
    }
}
