using System.Text.Json;
using SensMerging.Abstractions;
using SensMerging.Core.Models;
using SensMerging.Host.Plugins;
using SensMerging.Host.Tests.Merging;
using SensMerging.Registry;
using static TorchSharp.torch;

namespace SensMerging.Host.Tests.Plugins;

/// <summary>
/// The contract packed once into a local folder feed (a unique version, so no copy in ~/.nuget/packages can stand in
/// for it) and tiny Llama models (a base, two experts, calibration files) shared by every template test.
/// </summary>
public sealed class PackedContractFixture : IAsyncLifetime
{
    public string Root { get; } = TestPaths.NewTempDir("templates");

    public string Feed => Path.Combine(Root, "feed");

    public string ContractVersion { get; } = $"{PluginContract.Version}.0-templates{DateTime.UtcNow:yyyyMMddHHmmss}{Guid.NewGuid():N}";

    public string Base => Path.Combine(Root, "llamas", "base");

    public string Math => Path.Combine(Root, "llamas", "math");

    public string Code => Path.Combine(Root, "llamas", "code");

    public string MathData => Path.Combine(Root, "llamas", "math.jsonl");

    public string CodeData => Path.Combine(Root, "llamas", "code.jsonl");

    public async Task InitializeAsync()
    {
        var (exit, stdout, stderr) = await PluginTemplateTests.DotnetAsync(Root, "pack", Path.Combine(TestPaths.RepoRoot, "src", "SensMerging.Abstractions"),
            "-c", "Release", "-o", Feed, $"-p:PackageVersion={ContractVersion}", "-p:IncludeSymbols=false", "--nologo");
        Assert.True(exit == 0, $"dotnet pack failed:\n{stdout}\n{stderr}");
        TinyLlama.Write(Base, 20);
        TinyLlama.Write(Math, 21);
        TinyLlama.Write(Code, 22);
        TinyLlama.Calibration(MathData, "add", 3);
        TinyLlama.Calibration(CodeData, "print", 3);
    }

    public Task DisposeAsync()
    {
        Directory.Delete(Root, recursive: true);
        // Restore extracted this run's unique contract version into the global packages folder: nothing else uses it.
        var packages = Environment.GetEnvironmentVariable("NUGET_PACKAGES")
            ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        var cached = Path.Combine(packages, "sensmerging.abstractions", ContractVersion.ToLowerInvariant());
        if (Directory.Exists(cached))
        {
            Directory.Delete(cached, recursive: true);
        }
        return Task.CompletedTask;
    }
}

/// <summary>
/// A plugin author's start, for every kind: <c>sensmerge plugins new</c> instantiates the template outside the solution
/// (its own nuget.config names the packed contract's folder; the user-wide NuGet configuration is not touched), the
/// generated projects build as generated and their one test passes, the plugin folder loads in the unchanged host, and
/// the host uses it: a merge for the strategies, <c>sensmerge scores</c> for the scorer, a decorated merge for the
/// decorator, each checked against the plugin's formula computed here in double. The strategies run in one test class
/// and the scorer and decorator in another, so that at most two generated projects build at a time.
/// </summary>
public sealed class StrategyTemplateTests(PackedContractFixture fixture) : PluginTemplateTests(fixture), IClassFixture<PackedContractFixture>
{
    [Fact]
    public async Task Strategy_template_builds_passes_its_test_and_merges_in_the_host()
    {
        var (component, hostDir) = await GenerateBuildAndTestAsync("strategy", "AcmeBlend");
        var config = Write(hostDir, "merge.yaml", $$"""
            merge_method: {{component}}
            base_model: {{Fixture.Base}}
            models:
              - model: {{Fixture.Math}}
                parameters: {weight: 0.7}
              - model: {{Fixture.Code}}
                parameters: {weight: 1.3}
            parameters:
              lambda: 0.5
            """);
        var output = await MergeAsync(hostDir, config);

        double[] w = [0.7, 1.3];
        ForEachTensor(output, (b, x, actual) =>
        {
            using var expected = b + (0.5 * ((w[0] * (x[0] - b)) + (w[1] * (x[1] - b))));
            return expected.to(ScalarType.Float32);
        });
    }

    [Fact]
    public async Task Streaming_strategy_template_builds_passes_its_test_and_merges_in_the_host()
    {
        var (component, hostDir) = await GenerateBuildAndTestAsync("streaming-strategy", "AcmeNormMatch");
        var config = Write(hostDir, "merge.yaml", $$"""
            merge_method: {{component}}
            base_model: {{Fixture.Base}}
            models:
              - model: {{Fixture.Math}}
                parameters: {weight: 1.0}
              - model: {{Fixture.Code}}
                parameters: {weight: 3.0}
            """);
        var output = await MergeAsync(hostDir, config);

        double[] p = [0.25, 0.75];
        ForEachTensor(output, (b, x, actual) =>
        {
            using var scope = NewDisposeScope();
            var d = x.Select(xi => xi - b).ToArray();
            var m = (p[0] * d[0]) + (p[1] * d[1]);
            var target = (p[0] * d[0].norm().item<double>()) + (p[1] * d[1].norm().item<double>());
            var norm = m.norm().item<double>();
            return (b + ((norm > 0 ? target / norm : 1.0) * m)).to(ScalarType.Float32).MoveToOuterDisposeScope();
        });
    }

}

/// <summary>The scorer and decorator templates (see <see cref="StrategyTemplateTests"/>).</summary>
public sealed class ScorerAndDecoratorTemplateTests(PackedContractFixture fixture) : PluginTemplateTests(fixture), IClassFixture<PackedContractFixture>
{
    [Fact]
    public async Task Scorer_template_builds_passes_its_test_and_scores_in_the_host()
    {
        var (component, hostDir) = await GenerateBuildAndTestAsync("scorer", "AcmeGradNorm", "SensMerging.Scorers", "SensMerging.Decorators.Sens", "SensMerging.Strategies.Linear");
        // Two sens decorators, one on the new scorer and one on the built-in fisher, both on one calibration sample:
        // the new scorer's S (the gradient norm per layer group) squared must be fisher's S (the squared gradient summed).
        var config = Write(hostDir, "scores.yaml", $$"""
            merge_method: linear
            models:
              - model: {{Fixture.Math}}
                calibration: {path: {{Fixture.MathData}}, samples: 1, max_length: 24}
              - model: {{Fixture.Code}}
                calibration: {path: {{Fixture.CodeData}}, samples: 1, max_length: 24}
            decorators:
              - name: sens
                parameters: {task_scorer: {{component}}, cross_scaling: false}
              - name: sens
                parameters: {task_scorer: fisher, cross_scaling: false}
            """);
        var (exit, stdout, stderr) = await Processes.SensMergeAsync("scores", config, "--json", "--plugins", Path.Combine(hostDir, "plugins.json"), "--registry", Path.Combine(hostDir, "registry.db"));
        Assert.True(exit == 0, stderr + stdout);
        var reports = JsonDocument.Parse(stdout).RootElement;
        var mine = Table(reports[0], "S");
        var fisher = Table(reports[1], "S");
        Assert.Equal(fisher.Columns, mine.Columns);
        Assert.Equal(2, mine.Values.Length);
        Assert.Contains("model.layers.1", mine.Columns);
        for (var e = 0; e < 2; e++)
        {
            for (var g = 0; g < mine.Columns.Length; g++)
            {
                var squared = mine.Values[e][g] * mine.Values[e][g];
                Assert.True(fisher.Values[e][g] > 0, $"fisher score {e}, {mine.Columns[g]} is zero");
                Assert.True(System.Math.Abs(squared - fisher.Values[e][g]) <= 1e-6 * fisher.Values[e][g],
                    $"expert {e}, {mine.Columns[g]}: gradient norm squared {squared} != fisher {fisher.Values[e][g]}");
            }
        }
    }

    [Fact]
    public async Task Decorator_template_builds_passes_its_test_and_steers_a_merge_in_the_host()
    {
        var (component, hostDir) = await GenerateBuildAndTestAsync("decorator", "AcmeScoreShare", "SensMerging.Scorers", "SensMerging.Strategies.Linear");
        var config = Write(hostDir, "merge.yaml", $$"""
            merge_method: linear
            models:
              - model: {{Fixture.Math}}
                calibration: {path: {{Fixture.MathData}}, samples: 2, max_length: 24}
              - model: {{Fixture.Code}}
                calibration: {path: {{Fixture.CodeData}}, samples: 2, max_length: 24}
            decorators:
              - name: {{component}}
                parameters:
                  scorer: fisher
                  strength: [{filter: model.layers.0, value: 0.0}, {value: 1.0}]
            """);
        var registry = Path.Combine(hostDir, "registry.db");
        var output = await MergeAsync(hostDir, config, registry);

        using var store = LiteDbMergeRegistry.Open(new RegistryOptions { Path = registry });
        var record = await store.GetAsync(output.RecordId) ?? throw new InvalidOperationException("no record");
        Assert.Equal(component, Assert.Single(record.Decorators).Plugin.Component);
        var coefficients = record.Coefficients ?? throw new InvalidOperationException("the decorator's coefficients were not recorded");
        var scores = record.ScoreTables.Single(t => t.Scorer == "fisher");
        // c_i^l = (S_i^l / mean_j S_j^l)^strength, from the scorer's table as recorded; the template declares strength per
        // layer group (contract 1.6), so the filter list gives block 0 strength 0 (c = 1) and every other group strength 1.
        Assert.Contains("model.layers.0", scores.Columns);
        for (var g = 0; g < scores.Columns.Count; g++)
        {
            var mean = (scores.Values[0][g] + scores.Values[1][g]) / 2;
            var strength = scores.Columns[g] == "model.layers.0" ? 0.0 : 1.0;
            for (var e = 0; e < 2; e++)
            {
                Assert.Equal(System.Math.Pow(scores.Values[e][g] / mean, strength), coefficients.Get(coefficients.Experts[e], scores.Columns[g]), 12);
            }
        }
        Assert.Equal(0.0, record.DecoratorSettings[component]["strength"].AsMap["model.layers.0"].AsDouble);
        var steered = 0;
        ForEachTensor(output, (_, x, actual) =>
        {
            var group = LayerGroups.Of(output.Current);
            var c = coefficients.Experts.Select(e => coefficients.Get(e, group)).ToArray();
            if (System.Math.Abs(c[0] - c[1]) > 1e-3)
            {
                steered++;
            }
            using var expected = ((c[0] * x[0]) + (c[1] * x[1])) / (c[0] + c[1]);
            return expected.to(ScalarType.Float32);
        });
        Assert.True(steered > 0, "every coefficient pair is equal: the decorator steered nothing");
    }

}

/// <summary>What the template tests share: generate, build and test a template, install it, merge and check.</summary>
public abstract class PluginTemplateTests(PackedContractFixture fixture)
{
    protected PackedContractFixture Fixture => fixture;

    /// <summary>
    /// <c>sensmerge plugins new KIND NAME</c> into the fixture's folder; <c>dotnet test</c> on the generated folder (plugin and
    /// test project); the plugin's build output dropped into a host folder's plugins.d with a plugins.json that also lists
    /// <paramref name="builtIns"/>; <c>plugins list</c> shows it Loaded. Returns the component's name and the host folder.
    /// </summary>
    protected async Task<(string Component, string HostDir)> GenerateBuildAndTestAsync(string kind, string name, params string[] builtIns)
    {
        var project = Path.Combine(fixture.Root, kind);
        var (exit, stdout, stderr) = await Processes.SensMergeAsync("plugins", "new", kind, name, "--out", project,
            "--feed", fixture.Feed, "--contract-version", fixture.ContractVersion);
        Assert.True(exit == 0, stderr + stdout);
        var component = PluginTemplates.DerivedName(name);
        Assert.Contains($"component '{component}'", stdout, StringComparison.Ordinal);
        Assert.Contains(fixture.Feed, File.ReadAllText(Path.Combine(project, "nuget.config")), StringComparison.Ordinal);

        // Builds the plugin and its tests, runs the one generated test. On a system whose libstdc++ predates GCC 13 the
        // repository's shim step patches the test output's copy of TorchSharp's native library (docs/libstdcxx-shim.md).
        (exit, stdout, stderr) = await DotnetAsync(project, "test", project, "-c", "Release", "--nologo",
            $"-p:CustomAfterMicrosoftCommonTargets={Path.Combine(TestPaths.RepoRoot, "build", "LibStdCxxShim.targets")}");
        Assert.True(exit == 0, $"dotnet test of the generated {kind} failed:\n{stdout}\n{stderr}");
        Assert.Matches(@"Passed!\s+-\s+Failed:\s+0,\s+Passed:\s+1,", stdout);
        // The test output holds a copy of libtorch (about 1 GB): gone once it has run.
        Directory.Delete(Path.Combine(project, "tests", name + ".Tests", "bin"), recursive: true);

        var pluginOutput = Path.Combine(project, "src", name, "bin", "Release", "net10.0");
        var manifest = JsonDocument.Parse(File.ReadAllText(Path.Combine(pluginOutput, PluginContract.ManifestFileName))).RootElement;
        Assert.Equal(PluginTemplates.DerivedName(name, "-"), manifest.GetProperty("id").GetString());
        Assert.Equal(PluginContract.Version, manifest.GetProperty("contractVersion").GetString());
        Assert.False(File.Exists(Path.Combine(pluginOutput, "SensMerging.Abstractions.dll")), "the contract must not be copied into a plugin");
        Assert.False(File.Exists(Path.Combine(pluginOutput, "TorchSharp.dll")), "TorchSharp must not be copied into a plugin");

        var hostDir = Path.Combine(fixture.Root, kind + "-host");
        TestPaths.CopyDirectory(pluginOutput, Path.Combine(hostDir, "plugins.d", name));
        var pluginsFile = Path.Combine(hostDir, "plugins.json");
        File.WriteAllText(pluginsFile, JsonSerializer.Serialize(new
        {
            searchPaths = new[] { "plugins.d" },
            plugins = builtIns.Select(p => new { path = TestPaths.PluginFolder(p) }),
        }));
        (exit, stdout, stderr) = await Processes.SensMergeAsync("plugins", "list", "--json", "--plugins", pluginsFile);
        Assert.True(exit == 0, stderr);
        var plugin = JsonDocument.Parse(stdout).RootElement.GetProperty("plugins").EnumerateArray()
            .Single(p => p.GetProperty("id").GetString() == PluginTemplates.DerivedName(name, "-"));
        Assert.True(plugin.GetProperty("status").GetString() == "Loaded", plugin.ToString());
        Assert.Equal(component, plugin.GetProperty("components")[0].GetProperty("name").GetString());
        return (component, hostDir);
    }

    protected static string Write(string folder, string file, string text)
    {
        var path = Path.Combine(folder, file);
        File.WriteAllText(path, text);
        return path;
    }

    protected static async Task<MergedOutput> MergeAsync(string hostDir, string config, string? registry = null)
    {
        var output = Path.Combine(hostDir, "merged");
        var (exit, stdout, stderr) = await Processes.SensMergeAsync("merge", config, "--out", output,
            "--plugins", Path.Combine(hostDir, "plugins.json"), "--registry", registry ?? Path.Combine(hostDir, "registry.db"));
        Assert.True(exit == 0, stderr + stdout);
        return new MergedOutput(output, stdout.Split("registry id ")[1].Trim());
    }

    /// <summary>
    /// For every tensor of the merged model: <paramref name="expected"/>(base, experts, merged) in double (inputs widened)
    /// returns the float32 tensor the plugin's formula gives, which the merged tensor must match.
    /// </summary>
    protected void ForEachTensor(MergedOutput output, Func<Tensor, Tensor[], Tensor, Tensor> expected)
    {
        using var baseModel = ModelFolder.Open(fixture.Base);
        using var math = ModelFolder.Open(fixture.Math);
        using var code = ModelFolder.Open(fixture.Code);
        using var merged = ModelFolder.Open(output.Folder);
        Assert.NotEmpty(merged.Tensors);
        foreach (var tensor in merged.Tensors)
        {
            using var scope = NewDisposeScope();
            output.Current = tensor.Name;
            var b = baseModel.ReadTensor(tensor.Name).to(ScalarType.Float64);
            Tensor[] x = [math.ReadTensor(tensor.Name).to(ScalarType.Float64), code.ReadTensor(tensor.Name).to(ScalarType.Float64)];
            var actual = merged.ReadTensor(tensor.Name);
            var want = expected(b, x, actual);
            Assert.True(actual.allclose(want, rtol: 1e-4, atol: 1e-6),
                $"{tensor.Name}: the merged values are not the plugin's formula (largest difference {(actual - want).abs().max().item<float>()})");
        }
    }

    protected static (string[] Columns, double[][] Values) Table(JsonElement report, string name)
    {
        var table = report.GetProperty("tables").EnumerateArray().Single(t => t.GetProperty("scorer").GetString() == name);
        return ([.. table.GetProperty("columns").EnumerateArray().Select(c => c.GetString()!)],
            [.. table.GetProperty("values").EnumerateArray().Select(r => r.EnumerateArray().Select(v => v.GetDouble()).ToArray())]);
    }

    /// <summary>Runs <c>dotnet ARGS</c> in <paramref name="folder"/>, without telemetry or MSBuild nodes left running.</summary>
    internal static Task<(int ExitCode, string StdOut, string StdErr)> DotnetAsync(string folder, params string[] args) =>
        Processes.RunAsync("dotnet", args, folder, new Dictionary<string, string>
        {
            ["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1",
            ["DOTNET_NOLOGO"] = "1",
            ["MSBUILDDISABLENODEREUSE"] = "1",
        }, TimeSpan.FromMinutes(8));

    protected sealed class MergedOutput(string folder, string recordId)
    {
        public string Folder => folder;

        public string RecordId => recordId;

        /// <summary>The tensor <see cref="ForEachTensor"/> is checking.</summary>
        public string Current { get; set; } = string.Empty;
    }
}
