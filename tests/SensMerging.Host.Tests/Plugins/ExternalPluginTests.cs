using System.Text.Json;
using SensMerging.Abstractions;

namespace SensMerging.Host.Tests.Plugins;

/// <summary>
/// A plugin author's workflow end to end: pack the contract, build a plugin project outside the solution that references
/// only that package from a local folder feed, drop the output into a plugins folder, and have the unchanged host run it.
/// </summary>
public sealed class ExternalPluginTests : IDisposable
{
    private readonly string _root = TestPaths.NewTempDir("external");

    public void Dispose() => Directory.Delete(_root, recursive: true);

    [Fact]
    public async Task Plugin_built_outside_the_solution_from_the_packed_contract_is_discovered_and_runs()
    {
        var feed = Path.Combine(_root, "feed");
        // A unique package version, so a stale copy in the NuGet cache can never stand in for this build's contract.
        var packageVersion = $"{PluginContract.Version}.0-test{DateTime.UtcNow:yyyyMMddHHmmssfff}";
        await Run("dotnet", "pack", Path.Combine(TestPaths.RepoRoot, "src", "SensMerging.Abstractions"), "-o", feed,
            $"-p:PackageVersion={packageVersion}", "-p:IncludeSymbols=false", "--nologo");
        Assert.Single(Directory.GetFiles(feed, "SensMerging.Abstractions.*.nupkg"));

        var project = Path.Combine(_root, "AcmeStrategy");
        Directory.CreateDirectory(project);
        File.WriteAllText(Path.Combine(_root, "nuget.config"), $"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration>
              <packageSources>
                <add key="local-contract" value="{feed}" />
              </packageSources>
            </configuration>
            """);
        // Isolate from the repository's Directory.Build.* and central package management.
        File.WriteAllText(Path.Combine(_root, "Directory.Build.props"), "<Project />");
        File.WriteAllText(Path.Combine(_root, "Directory.Build.targets"), "<Project />");
        File.WriteAllText(Path.Combine(_root, "Directory.Packages.props"), "<Project />");
        File.WriteAllText(Path.Combine(project, "AcmeStrategy.csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <TargetFramework>net10.0</TargetFramework>
                <Nullable>enable</Nullable>
                <ImplicitUsings>enable</ImplicitUsings>
                <SensMergingPluginId>acme-negate</SensMergingPluginId>
                <SensMergingPluginDescription>Third-party test strategy</SensMergingPluginDescription>
                <Version>2.4.1</Version>
              </PropertyGroup>
              <ItemGroup>
                <PackageReference Include="SensMerging.Abstractions" Version="{packageVersion}" />
              </ItemGroup>
            </Project>
            """);
        File.WriteAllText(Path.Combine(project, "AcmeStrategy.cs"), """
            using Microsoft.Extensions.DependencyInjection;
            using SensMerging.Abstractions;
            using static TorchSharp.torch;

            namespace Acme;

            public sealed class AcmePlugin : IPluginConfigurator
            {
                public void ConfigureServices(IServiceCollection services, PluginContext context) =>
                    services.AddSingleton<IMergeStrategy, NegatedMean>();
            }

            public sealed class NegatedMean : IMergeStrategy
            {
                public string Name => "acme_negated_mean";
                public string Description => "Minus the weighted mean (a third-party test strategy).";
                public IReadOnlyList<ParameterSpec> Parameters { get; } = [ParameterSpec.Float("weight", 1.0, ParameterScope.PerModel, "weight")];
                public StrategyTraits Traits { get; } = new(RequiresBaseModel: false, Elementwise: true);
                public void Merge(MergeTensorRequest request)
                {
                    request.Output.zero_();
                    double total = 0;
                    for (var i = 0; i < request.Models.Count; i++)
                    {
                        request.Output.add_(request.Models[i], alpha: request.Weights[i]);
                        total += request.Weights[i];
                    }
                    request.Output.div_(-total);
                }
            }
            """);
        var output = Path.Combine(_root, "build-out");
        await Run("dotnet", "build", project, "-c", "Release", "-o", output, "--nologo");
        var manifest = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, PluginContract.ManifestFileName))).RootElement;
        Assert.Equal("acme-negate", manifest.GetProperty("id").GetString());
        Assert.Equal("2.4.1", manifest.GetProperty("version").GetString());
        Assert.False(File.Exists(Path.Combine(output, "SensMerging.Abstractions.dll")), "the contract must not be copied into a plugin");
        Assert.False(File.Exists(Path.Combine(output, "TorchSharp.dll")), "TorchSharp must not be copied into a plugin");

        // Drop it into a plugins folder the host searches; the host itself is unchanged.
        var hostDir = Path.Combine(_root, "host");
        TestPaths.CopyDirectory(output, Path.Combine(hostDir, "plugins.d", "acme"));
        var pluginsFile = Path.Combine(hostDir, "plugins.json");
        File.WriteAllText(pluginsFile, """{ "searchPaths": ["plugins.d"] }""");

        var (exit, stdout, stderr) = await Processes.SensMergeAsync("plugins", "list", "--json", "--plugins", pluginsFile);
        Assert.True(exit == 0, stderr);
        var plugin = JsonDocument.Parse(stdout).RootElement.GetProperty("plugins")[0];
        Assert.Equal("Loaded", plugin.GetProperty("status").GetString());
        Assert.Equal("acme_negated_mean", plugin.GetProperty("components")[0].GetProperty("name").GetString());

        // And it runs: load it through the host's loader and merge real tensors with it.
        var catalog = SensMerging.Host.Plugins.PluginCatalog.Load(pluginsFile, new SensMerging.Host.Plugins.PluginLoader(Microsoft.Extensions.Logging.Abstractions.NullLoggerFactory.Instance), Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
        var strategy = catalog.GetStrategy("acme_negated_mean");
        using var a = TorchSharp.torch.tensor(new float[] { 1, 2 });
        using var b = TorchSharp.torch.tensor(new float[] { 3, 6 });
        using var result = TorchSharp.torch.empty(2);
        strategy.Merge(new MergeTensorRequest
        {
            TensorName = "lm_head.weight",
            LayerGroup = LayerGroups.LmHead,
            Models = [a, b],
            ModelNames = ["a", "b"],
            Weights = [1, 3],
            Parameters = ResolvedParameters.Empty,
            Output = result,
            Scratch = null!,
        });
        Assert.Equal(new float[] { -2.5f, -5f }, result.data<float>().ToArray()); // -(1*a + 3*b) / 4

        await SensDecoratorSteersTheThirdPartyStrategy(hostDir);
    }

    /// <summary>
    /// The sens decorator wraps the strategy the host has never seen: the merged weights of each layer group must be
    /// the third party's formula applied with the per-(expert, group) coefficients the registry recorded.
    /// </summary>
    private async Task SensDecoratorSteersTheThirdPartyStrategy(string hostDir)
    {
        var models = Path.Combine(_root, "llamas");
        SensMerging.Host.Tests.Merging.TinyLlama.Write(Path.Combine(models, "math"), 11);
        SensMerging.Host.Tests.Merging.TinyLlama.Write(Path.Combine(models, "code"), 12);
        var mathData = SensMerging.Host.Tests.Merging.TinyLlama.Calibration(Path.Combine(models, "math.jsonl"), "add", 4);
        var codeData = SensMerging.Host.Tests.Merging.TinyLlama.Calibration(Path.Combine(models, "code.jsonl"), "print", 4);
        var pluginsFile = Path.Combine(hostDir, "plugins-with-sens.json");
        File.WriteAllText(pluginsFile, JsonSerializer.Serialize(new
        {
            searchPaths = new[] { "plugins.d" },
            plugins = new[] { "SensMerging.Scorers", "SensMerging.Decorators.Sens" }.Select(p => new { path = TestPaths.PluginFolder(p) }),
        }));
        var config = Path.Combine(_root, "sens-acme.yaml");
        File.WriteAllText(config, $$"""
            merge_method: acme_negated_mean
            models:
              - model: {{Path.Combine(models, "math")}}
                calibration: {path: {{mathData}}, samples: 4, max_length: 24}
              - model: {{Path.Combine(models, "code")}}
                calibration: {path: {{codeData}}, samples: 4, max_length: 24}
            decorators:
              - name: sens
                parameters: {temperature: 0.05}
            """);
        var output = Path.Combine(_root, "sens-acme-out");
        var registry = Path.Combine(_root, "registry.db");

        var (exit, stdout, stderr) = await Processes.SensMergeAsync("merge", config, "--out", output, "--plugins", pluginsFile, "--registry", registry);
        Assert.True(exit == 0, stderr + stdout);

        var id = stdout.Split("registry id ")[1].Trim();
        using var store = SensMerging.Registry.LiteDbMergeRegistry.Open(new SensMerging.Registry.RegistryOptions { Path = registry });
        var record = await store.GetAsync(id) ?? throw new InvalidOperationException("no record");
        Assert.Equal("acme-negate", record.Strategy!.PluginId);
        Assert.Equal("sens", Assert.Single(record.Decorators).Plugin.Component);
        var coefficients = record.Coefficients ?? throw new InvalidOperationException("no coefficients recorded");
        Assert.Equal(2, coefficients.Experts.Count);

        using var math = SensMerging.Core.Models.ModelFolder.Open(Path.Combine(models, "math"));
        using var code = SensMerging.Core.Models.ModelFolder.Open(Path.Combine(models, "code"));
        using var merged = SensMerging.Core.Models.ModelFolder.Open(output);
        var steered = 0;
        foreach (var tensor in merged.Tensors)
        {
            var group = LayerGroups.Of(tensor.Name);
            var c = coefficients.Experts.Select(e => coefficients.Get(e, group)).ToArray();
            using var x0 = math.ReadTensor(tensor.Name);
            using var x1 = code.ReadTensor(tensor.Name);
            using var actual = merged.ReadTensor(tensor.Name);
            using var expected = (x0 * c[0] + x1 * c[1]) / -(c[0] + c[1]);
            Assert.True(actual.allclose(expected, rtol: 1e-4, atol: 1e-6), $"{tensor.Name}: merged values are not the strategy's formula with the recorded coefficients");
            using var unsteered = (x0 + x1) / -2.0;
            if (Math.Abs(c[0] - c[1]) > 1e-3 && !actual.allclose(unsteered, rtol: 1e-4, atol: 1e-6))
            {
                steered++;
            }
        }
        Assert.True(steered > 0, "the coefficients changed no tensor: the decorator did not steer the strategy");

        // `sensmerge scores` runs the same scorers without merging and prints the same coefficients.
        var (sexit, sout, serr) = await Processes.SensMergeAsync("scores", config, "--json", "--plugins", pluginsFile, "--registry", registry);
        Assert.True(sexit == 0, serr + sout);
        var report = JsonDocument.Parse(sout).RootElement[0];
        Assert.Equal("sens", report.GetProperty("decorator").GetString());
        var table = report.GetProperty("tables").EnumerateArray().Single(t => t.GetProperty("scorer").GetString() == "coefficients");
        var values = table.GetProperty("values");
        for (var e = 0; e < coefficients.Experts.Count; e++)
        {
            for (var g = 0; g < coefficients.LayerGroups.Count; g++)
            {
                Assert.Equal(coefficients.Values[e][g], values[e][g].GetDouble(), 12);
            }
        }
        // Under --max-memory far below what the models need loaded whole (about 4 MB with a 256-token sample's
        // activations), the runtime streams them from their files block by block: the same coefficients.
        var plan = new SensMerging.Runtime.Model.StreamingPlan(SensMerging.Host.Tests.Merging.TinyLlama.Config, 4);
        Assert.True(plan.InMemoryBytes(true, 256) > 1_000_000 && plan.BudgetFor(1, 24, 24) < 1_000_000);
        var (bexit, bout, berr) = await Processes.SensMergeAsync("scores", config, "--json", "--max-memory", "1MB", "--plugins", pluginsFile, "--registry", registry, "--verbose");
        Assert.True(bexit == 0, berr + bout);
        Assert.Contains("Streaming ", berr + bout, StringComparison.Ordinal);
        var budgeted = JsonDocument.Parse(bout[bout.IndexOf('[', StringComparison.Ordinal)..]).RootElement[0].GetProperty("tables").EnumerateArray().Single(t => t.GetProperty("scorer").GetString() == "coefficients").GetProperty("values");
        for (var e = 0; e < coefficients.Experts.Count; e++)
        {
            for (var g = 0; g < coefficients.LayerGroups.Count; g++)
            {
                Assert.True(Math.Abs(coefficients.Values[e][g] - budgeted[e][g].GetDouble()) <= 1e-5 * Math.Abs(coefficients.Values[e][g]), $"coefficient {e},{g}: streamed {budgeted[e][g].GetDouble()} vs {coefficients.Values[e][g]}");
            }
        }
        var (fexit, fout, ferr) = await Processes.SensMergeAsync("scores", config, "--max-memory", "1KB", "--plugins", pluginsFile, "--registry", registry);
        Assert.True(fexit != 0, "a 1 KB budget was accepted: " + fout);
        Assert.Contains("memory budget 0.0 MiB is too small", ferr + fout, StringComparison.Ordinal);
        var (uexit, uout, uerr) = await Processes.SensMergeAsync("scores", config, "--max-memory", "12XB", "--plugins", pluginsFile, "--registry", registry);
        Assert.True(uexit != 0 && (uerr + uout).Contains("unknown unit 'XB'", StringComparison.Ordinal), uerr + uout);

        var (texit, tout, terr) = await Processes.SensMergeAsync("scores", config, "--plugins", pluginsFile, "--registry", registry);
        Assert.True(texit == 0, terr + tout);
        Assert.Contains("alpha", tout, StringComparison.Ordinal);
        Assert.Contains("tau", tout, StringComparison.Ordinal);
        Assert.Contains("model.layers.1", tout, StringComparison.Ordinal);
    }

    private async Task Run(string file, params string[] args)
    {
        var (exit, stdout, stderr) = await Processes.RunAsync(file, args, _root, new Dictionary<string, string> { ["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1" });
        Assert.True(exit == 0, $"{file} {string.Join(' ', args)} failed ({exit}):\n{stdout}\n{stderr}");
    }
}
