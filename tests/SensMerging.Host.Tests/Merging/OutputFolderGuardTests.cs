using SensMerging.Core.Config;
using SensMerging.Core.Models;
using SensMerging.Host.Merging;

namespace SensMerging.Host.Tests.Merging;

/// <summary>The output-folder rules for the places a process test does not cover: the registry, the Hub cache, calibration files, links.</summary>
public sealed class OutputFolderGuardTests : IDisposable
{
    private readonly string _root = TestPaths.NewTempDir("guard");

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private MergeConfig Config(string? calibration = null)
    {
        var model = Directory.CreateDirectory(Path.Combine(_root, "models", "a")).FullName;
        var yaml = $"merge_method: linear\nmodels:\n  - model: {model}\n" + (calibration is null ? "" : $"    calibration: {{path: {calibration}}}\n");
        var configs = Directory.CreateDirectory(Path.Combine(_root, "configs")).FullName;
        return MergeConfigParser.Parse(yaml, Path.Combine(configs, "m.yaml"), configs);
    }

    private string Refusal(OutputFolderGuard guard, string output, MergeConfig config) =>
        Assert.Throws<ModelFolderException>(() => guard.CheckOverlaps(output, config)).Message;

    [Fact]
    public void The_registry_folder_and_the_Hub_cache_are_never_an_output_folder()
    {
        var registry = Path.Combine(_root, "state", "registry", "merges.db");
        var hub = Path.Combine(_root, "hf", "hub");
        var guard = new OutputFolderGuard(hub, registry);
        var config = Config();

        Assert.Contains($"output folder '{_root}/state/registry' is the registry database's folder '{_root}/state/registry': --overwrite would delete it", Refusal(guard, Path.Combine(_root, "state", "registry"), config), StringComparison.Ordinal);
        Assert.Contains($"output folder '{_root}/state' contains the registry database's folder '{_root}/state/registry'", Refusal(guard, Path.Combine(_root, "state"), config), StringComparison.Ordinal);
        Assert.Contains($"output folder '{_root}' contains the input model folder '{_root}/models/a'", Refusal(guard, _root, config), StringComparison.Ordinal);
        Assert.Contains($"is the Hub cache '{hub}'", Refusal(guard, hub, config), StringComparison.Ordinal);
        Assert.Contains($"output folder '{hub}/models--acme--x' lies inside the Hub cache '{hub}': the merge would write into it", Refusal(guard, Path.Combine(hub, "models--acme--x"), config), StringComparison.Ordinal);
        Assert.Contains($"contains the Hub cache '{hub}'", Refusal(guard, Path.Combine(_root, "hf"), config), StringComparison.Ordinal);

        // Beside them, and inside the registry's or the config's folder, is fine (merge m.yaml --out merged).
        guard.CheckOverlaps(Path.Combine(_root, "out"), config);
        guard.CheckOverlaps(Path.Combine(_root, "state", "registry", "merged"), config);
        guard.CheckOverlaps(Path.Combine(_root, "configs", "merged"), config);
    }

    [Fact]
    public void A_calibration_file_may_not_end_up_inside_the_output_folder()
    {
        var data = Directory.CreateDirectory(Path.Combine(_root, "data")).FullName;
        var samples = Path.Combine(data, "math.jsonl");
        File.WriteAllText(samples, "{\"text\": \"1+1=2\"}\n");
        var config = Config(samples);
        var guard = new OutputFolderGuard(null, null);

        Assert.Contains($"output folder '{data}' contains the calibration file '{samples}'", Refusal(guard, data, config), StringComparison.Ordinal);
        guard.CheckOverlaps(Path.Combine(data, "merged"), config);
    }

    [Fact]
    public void Links_are_followed_both_ways()
    {
        var config = Config();
        var model = Path.Combine(_root, "models", "a");
        var linkToModels = Path.Combine(_root, "shortcut");
        Directory.CreateSymbolicLink(linkToModels, "models");
        var guard = new OutputFolderGuard(null, null);

        Assert.Equal(Path.Combine(_root, "models", "a", "new"), RealPath.Of(Path.Combine(linkToModels, "a", "new")));
        Assert.Equal(_root, RealPath.Of(Path.Combine(linkToModels, "..")));
        Assert.Contains($"output folder '{linkToModels}/a/merged' (real path '{model}/merged') lies inside the input model folder '{model}'",
            Refusal(guard, Path.Combine(linkToModels, "a", "merged"), config), StringComparison.Ordinal);

        // The model reached through a link, the output given plainly.
        var linked = MergeConfigParser.Parse($"merge_method: linear\nmodels:\n  - model: {linkToModels}/a\n", Path.Combine(_root, "configs", "m.yaml"), Path.Combine(_root, "configs"));
        Assert.Contains($"is the input model folder '{linkToModels}/a' (real path '{model}')", Refusal(guard, model, linked), StringComparison.Ordinal);

        var loop = Path.Combine(_root, "loop");
        Directory.CreateSymbolicLink(loop, "loop");
        Assert.Throws<IOException>(() => RealPath.Of(Path.Combine(loop, "x")));
    }
}
