using System.Text.Json;
using SensMerging.Core.Lora;
using SensMerging.Core.Models;
using SensMerging.Core.SafeTensors;
using SensMerging.Core.Tests.PyTorch;

namespace SensMerging.Core.Tests.Lora;

/// <summary><see cref="LoraExtractor"/>: a truncated-SVD adapter of a fine-tune, checked against PyTorch's float64 SVD.</summary>
public sealed class LoraExtractorTests : IDisposable
{
    private static readonly string[] Linear =
    [
        "model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj.weight", "model.layers.1.self_attn.q_proj.weight", "model.layers.1.mlp.up_proj.weight",
    ];

    private readonly SafeTensorsTempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [TorchFact]
    public void Applying_the_extracted_adapter_leaves_the_eckart_young_residual_of_pytorchs_svd()
    {
        var (basePath, _) = TinyModels.Make(_dir.File("base"), 1, SafeTensorsDType.F32);
        // The fine-tune: a rank-3 update plus small noise on the linear weights, and a changed norm (not a linear weight).
        var random = new Random(5);
        var (ftPath, ftValues) = TinyModels.Make(_dir.File("ft"), 1, SafeTensorsDType.F32, edit: (name, data) =>
        {
            if (Linear.Contains(name))
            {
                var columns = 8;
                var rows = data.Length / columns;
                for (var k = 0; k < 3; k++)
                {
                    var u = Enumerable.Range(0, rows).Select(_ => (random.NextDouble() * 2) - 1).ToArray();
                    var v = Enumerable.Range(0, columns).Select(_ => (random.NextDouble() * 2) - 1).ToArray();
                    for (var i = 0; i < data.Length; i++)
                    {
                        data[i] += (float)((3 - k) * 0.5 * u[i / columns] * v[i % columns]);
                    }
                }
                for (var i = 0; i < data.Length; i++)
                {
                    data[i] += (float)(0.02 * ((random.NextDouble() * 2) - 1));
                }
            }
            else if (name == "model.layers.0.input_layernorm.weight")
            {
                data[0] += 0.5f;
            }
        });
        using var baseModel = ModelFolder.Open(basePath);
        using var finetune = ModelFolder.Open(ftPath);

        var result = new LoraExtractor().Extract(baseModel, finetune, new ExtractLoraRequest(_dir.File("adapter"), Rank: 2, Energy: null, "base"), CancellationToken.None);
        Assert.Equal(2, result.Rank);
        Assert.Equal(["model.layers.0.input_layernorm.weight"], result.NotCaptured);
        Assert.Equal(Linear.Select(n => n[..^".weight".Length]), result.Modules.Select(m => m.Module));
        Assert.Empty(Directory.GetDirectories(_dir.Path, "adapter.partial-*"));

        using var reference = JsonDocument.Parse(TorchPython.Run("svd", basePath, ftPath, "2", "0.99"));
        var norms = reference.RootElement.GetProperty("norm");
        var residuals = reference.RootElement.GetProperty("residual");
        Assert.Equal(Linear.Order(StringComparer.Ordinal), residuals.EnumerateObject().Select(p => p.Name).Order(StringComparer.Ordinal));
        using (var applied = ModelFolder.Open(basePath, result.OutputPath))
        using (var adapter = LoraAdapter.Open(result.OutputPath))
        {
            Assert.Equal((2, 1.0), (adapter.Rank, adapter.Scale));
            foreach (var name in Linear)
            {
                using var w = applied.ReadTensor(name);
                var got = w.data<float>().ToArray();
                var error = Math.Sqrt(got.Select((x, i) => ((double)x - ftValues[name][i]) * ((double)x - ftValues[name][i])).Sum());
                var expected = residuals.GetProperty(name).GetDouble();
                var norm = norms.GetProperty(name).GetDouble();
                Assert.True(Math.Abs(error - expected) <= (1e-5 * norm) + 1e-5, $"{name}: |W + BA - FT| = {error}, PyTorch's rank-2 residual {expected}");
                var module = result.Modules.Single(m => m.Module + ".weight" == name);
                Assert.True(Math.Abs(module.RelativeError - (expected / norm)) <= 1e-4, $"{name}: reported relative error {module.RelativeError}, expected {expected / norm}");
            }
        }

        var byEnergy = new LoraExtractor().Extract(baseModel, finetune, new ExtractLoraRequest(_dir.File("by-energy"), Rank: null, Energy: 0.99, "base"), CancellationToken.None);
        Assert.Equal(reference.RootElement.GetProperty("rank_for_energy").GetInt32(), byEnergy.Rank);
        Assert.Equal(3, byEnergy.Rank);
        Assert.All(byEnergy.Modules, m => Assert.True(m.RetainedEnergy >= 0.99, $"{m.Module} keeps {m.RetainedEnergy}"));
        var capped = new LoraExtractor().Extract(baseModel, finetune, new ExtractLoraRequest(_dir.File("capped"), Rank: 1, Energy: 0.99, "base"), CancellationToken.None);
        Assert.Equal(1, capped.Rank);
    }

    [Fact]
    public void Identical_models_and_used_output_folders_are_refused()
    {
        var (basePath, _) = TinyModels.Make(_dir.File("base"), 1, SafeTensorsDType.F32);
        using var baseModel = ModelFolder.Open(basePath);
        var same = Assert.Throws<ModelFolderException>(() => new LoraExtractor().Extract(baseModel, baseModel, new ExtractLoraRequest(_dir.File("a"), 4, null, "base"), CancellationToken.None));
        Assert.Contains("differs from", same.Message, StringComparison.Ordinal);
        Directory.CreateDirectory(_dir.File("used"));
        File.WriteAllText(Path.Combine(_dir.File("used"), "x"), "x");
        var used = Assert.Throws<ModelFolderException>(() => new LoraExtractor().Extract(baseModel, baseModel, new ExtractLoraRequest(_dir.File("used"), 4, null, "base"), CancellationToken.None));
        Assert.Contains("is not empty", used.Message, StringComparison.Ordinal);
        Assert.Equal(3, LoraExtractor.RankFor([3, 2, 1, 0], 0.99));
        Assert.Equal(1, LoraExtractor.RankFor([3, 2, 1], 0.5));
    }
}
