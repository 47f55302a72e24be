using System.Text.Json;
using SensMerging.Core.Models;

namespace SensMerging.Host.Tests.Merging;

/// <summary>
/// Sens-Merging on a frankenmerge: each source of an output layer is weighed by its coefficient for the layer it gives
/// (<c>layer_range[0] + j</c>), not for the output layer's position. Two slices that cross the code model's layers over:
/// output layer 0 takes math's layer 0 and code's layer 1, output layer 1 math's layer 1 and code's layer 0.
/// </summary>
public sealed class SensSlicesTests : IDisposable
{
    private readonly string _root = TestPaths.NewTempDir("sens-slices");
    private readonly string _plugins = Path.Combine(TestPaths.RepoRoot, "plugins.json");

    public void Dispose() => Directory.Delete(_root, recursive: true);

    [Fact]
    public async Task Each_source_is_scaled_by_its_coefficient_for_the_layer_it_gives()
    {
        var models = Path.Combine(_root, "models");
        foreach (var (name, seed) in new[] { ("base", 1L), ("math", 2L), ("code", 3L) })
        {
            TinyLlama.Write(Path.Combine(models, name), seed);
        }
        var mathData = TinyLlama.Calibration(Path.Combine(_root, "math.jsonl"), "add", 8);
        var codeData = TinyLlama.Calibration(Path.Combine(_root, "code.jsonl"), "mul", 8);
        string M(string name) => Path.Combine(models, name);
        var config = Path.Combine(_root, "franken.yml");
        File.WriteAllText(config, $$"""
            merge_method: task_arithmetic
            base_model: {{M("base")}}
            slices:
              - sources:
                  - model: {{M("base")}}
                    layer_range: [0, 1]
                  - model: {{M("math")}}
                    layer_range: [0, 1]
                    parameters: {weight: 0.6}
                    calibration: {path: {{mathData}}, samples: 8, max_length: 32}
                  - model: {{M("code")}}
                    layer_range: [1, 2]
                    parameters: {weight: 0.4}
                    calibration: {path: {{codeData}}, samples: 8, max_length: 32}
              - sources:
                  - model: {{M("base")}}
                    layer_range: [1, 2]
                  - model: {{M("math")}}
                    layer_range: [1, 2]
                    parameters: {weight: 0.6}
                  - model: {{M("code")}}
                    layer_range: [0, 1]
                    parameters: {weight: 0.4}
            dtype: float32
            decorators:
              - name: sens
            """);
        var registry = Path.Combine(_root, "registry", "merges.db");
        var output = Path.Combine(_root, "out");

        var (exit, stdout, stderr) = await Processes.SensMergeAsync("merge", config, "--out", output, "--plugins", _plugins, "--registry", registry);
        Assert.True(exit == 0, stderr + stdout);
        (exit, stdout, stderr) = await Processes.SensMergeAsync("scores", config, "--json", "--plugins", _plugins, "--registry", registry);
        Assert.True(exit == 0, stderr + stdout);

        // The coefficients table: one row per expert (math, code), one column per layer group.
        using var reports = JsonDocument.Parse(stdout);
        var table = reports.RootElement[0].GetProperty("tables").EnumerateArray().Single(t => t.GetProperty("scorer").GetString() == "coefficients");
        var experts = table.GetProperty("rows").EnumerateArray().Select(e => e.GetString()!).ToList();
        var groups = table.GetProperty("columns").EnumerateArray().Select(e => e.GetString()!).ToList();
        double C(string model, int layer) =>
            table.GetProperty("values")[experts.IndexOf(M(model))][groups.IndexOf($"model.layers.{layer}")].GetDouble();
        Assert.NotEqual(C("code", 0), C("code", 1));

        using var baseModel = ModelFolder.Open(M("base"));
        using var math = ModelFolder.Open(M("math"));
        using var code = ModelFolder.Open(M("code"));
        using var merged = ModelFolder.Open(output);
        float[] Read(ModelFolder folder, string name)
        {
            using var t = folder.ReadTensor(name);
            return t.data<float>().ToArray();
        }
        foreach (var (layer, codeLayer) in new[] { (0, 1), (1, 0) })
        {
            foreach (var suffix in new[] { "mlp.up_proj.weight", "self_attn.q_proj.weight" })
            {
                var name = $"model.layers.{layer}.{suffix}";
                var b = Read(baseModel, name);
                var m = Read(math, name);
                var c = Read(code, $"model.layers.{codeLayer}.{suffix}");
                var got = Read(merged, name);
                var (wm, wc) = (0.6 * C("math", layer), 0.4 * C("code", codeLayer));
                for (var i = 0; i < got.Length; i++)
                {
                    var expected = b[i] + (wm * (m[i] - b[i])) + (wc * (c[i] - b[i]));
                    Assert.True(Math.Abs(expected - got[i]) <= 1e-5 * Math.Max(1, Math.Abs(expected)), $"{name}[{i}]: {got[i]}, expected {expected}");
                }
            }
        }
    }
}
