using System.Text.Json;
using SensMerging.Core.Engine;
using SensMerging.Core.Models;
using SensMerging.Core.SafeTensors;
using SensMerging.Core.Tests.PyTorch;

namespace SensMerging.Core.Tests.Lora;

/// <summary>PEFT LoRA adapters applied to a base model's weights as they are read (<c>model+adapter</c> references).</summary>
public sealed class LoraAdapterTests : IDisposable
{
    private static readonly string[] Modules =
    [
        "model.layers.0.self_attn.q_proj", "model.layers.0.mlp.up_proj", "model.layers.1.self_attn.q_proj", "model.layers.1.mlp.up_proj",
    ];

    private readonly SafeTensorsTempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [TorchTheory]
    [InlineData("F32", false)]
    [InlineData("BF16", false)]
    [InlineData("F32", true)]
    public void A_lora_applied_merge_equals_merging_the_explicitly_merged_model(string dtypeName, bool rsLora)
    {
        var dtype = SafeTensorsDType.FromHeaderName(dtypeName)!;
        var (basePath, _) = TinyModels.Make(_dir.File("base"), 1, dtype);
        var (e2Path, _) = TinyModels.Make(_dir.File("e2"), 3, dtype);
        var adapter = WriteAdapter("adapter", rank: 4, alpha: 8, rsLora, ["q_proj", "up_proj"], Modules);
        // The reference: PyTorch computes W + scale * B @ A in float64 and casts to W's dtype, written as a full model.
        TorchPython.Run("lora", basePath, adapter, _dir.File("explicit"));

        using (var applied = ModelFolder.Open(basePath, adapter))
        using (var plain = ModelFolder.Open(basePath))
        using (var explicitly = ModelFolder.Open(_dir.File("explicit")))
        {
            Assert.Equal(adapter, applied.LoraAdapterPath);
            Assert.Equal(explicitly.Tensors.Select(t => t.Name), applied.Tensors.Select(t => t.Name));
            foreach (var t in applied.Tensors)
            {
                var got = Bytes(t);
                Assert.True(got.AsSpan().SequenceEqual(Bytes(explicitly.GetTensor(t.Name))), $"tensor {t.Name} differs from PyTorch's W + scale * B @ A");
                var adapted = Modules.Any(m => t.Name == m + ".weight");
                Assert.Equal(!adapted, got.AsSpan().SequenceEqual(Bytes(plain.GetTensor(t.Name))));
            }
            // Block reads (a row split between blocks, odd element counts) give the same bytes as a whole read.
            var q = applied.GetTensor("model.layers.1.mlp.up_proj.weight");
            var whole = Bytes(q);
            var pieces = new byte[whole.Length];
            for (var at = 0; at < whole.Length; at += 7 * dtype.Size)
            {
                var length = Math.Min(7 * dtype.Size, whole.Length - at);
                ModelFolder.ReadBytes(q, at, pieces.AsSpan(at, length));
            }
            Assert.Equal(whole, pieces);
        }

        var viaLora = Merge("out-lora", basePath, (basePath, adapter), e2Path);
        var viaExplicit = Merge("out-explicit", basePath, (_dir.File("explicit"), null), e2Path);
        Assert.Equal(
            viaExplicit.Files.Where(f => f.RelativePath.EndsWith(".safetensors", StringComparison.Ordinal)).Select(f => (f.RelativePath, f.Sha256)),
            viaLora.Files.Where(f => f.RelativePath.EndsWith(".safetensors", StringComparison.Ordinal)).Select(f => (f.RelativePath, f.Sha256)));
    }

    [Fact]
    public void Scale_is_alpha_over_r_or_over_sqrt_r_with_rslora()
    {
        TinyModels.Make(_dir.File("base"), 1, SafeTensorsDType.F32);
        using (var plain = Core.Lora.LoraAdapter.Open(WriteAdapter("plain", rank: 4, alpha: 8, rsLora: false, ["q_proj"], Modules[..1])))
        {
            Assert.Equal(2.0, plain.Scale);
        }
        using var rs = Core.Lora.LoraAdapter.Open(WriteAdapter("rs", rank: 4, alpha: 8, rsLora: true, ["q_proj"], Modules[..1]));
        Assert.Equal(4.0, rs.Scale);
        Assert.Equal("model.layers.0.self_attn.q_proj", Assert.Single(rs.Modules).Module);
    }

    [Fact]
    public void Adapters_that_do_not_fit_are_refused_with_the_reason()
    {
        var (basePath, _) = TinyModels.Make(_dir.File("base"), 1, SafeTensorsDType.F32);

        var noWeights = WriteAdapter("no-weights", 4, 8, false, ["q_proj"], Modules[..1]);
        File.Delete(Path.Combine(noWeights, "adapter_model.safetensors"));
        Assert.Contains("has neither adapter_model.safetensors nor adapter_model.bin", Refused(basePath, noWeights), StringComparison.Ordinal);

        var noConfig = WriteAdapter("no-config", 4, 8, false, ["q_proj"], Modules[..1]);
        File.Delete(Path.Combine(noConfig, "adapter_config.json"));
        Assert.Contains("has no adapter_config.json", Refused(basePath, noConfig), StringComparison.Ordinal);

        var rank = WriteAdapter("rank", 4, 8, false, ["q_proj"], Modules[..1], rankInFile: 3);
        Assert.Contains("'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight' has rank 3 ([3, 8]), but adapter_config.json says r = 4", Refused(basePath, rank), StringComparison.Ordinal);

        var unknownTarget = WriteAdapter("unknown-target", 4, 8, false, ["q_proj", "k_proj"], Modules[..1]);
        Assert.Contains("target module 'k_proj' matches no weight of the base model", Refused(basePath, unknownTarget), StringComparison.Ordinal);

        var unlisted = WriteAdapter("unlisted", 4, 8, false, ["q_proj"], Modules[..2]);
        Assert.Contains("module 'model.layers.0.mlp.up_proj' is adapted, but target_modules (q_proj) does not list 'up_proj'", Refused(basePath, unlisted), StringComparison.Ordinal);

        var missingModule = WriteAdapter("missing-module", 4, 8, false, ["v_proj"], ["model.layers.0.self_attn.v_proj"]);
        Assert.Contains("target module 'v_proj' matches no weight", Refused(basePath, missingModule), StringComparison.Ordinal);
        var missingByPattern = WriteAdapter("missing-pattern", 4, 8, false, null, ["model.layers.0.self_attn.v_proj"]);
        Assert.Contains("adapts module 'model.layers.0.self_attn.v_proj', but the base model", Refused(basePath, missingByPattern), StringComparison.Ordinal);

        var dora = WriteAdapter("dora", 4, 8, false, ["q_proj"], Modules[..1], extraConfig: ("use_dora", true));
        Assert.Contains("DoRA adapters (use_dora) are not supported", Refused(basePath, dora), StringComparison.Ordinal);

        var half = WriteAdapter("half", 4, 8, false, ["q_proj"], Modules[..1], dropB: true);
        Assert.Contains("module 'model.layers.0.self_attn.q_proj' has lora_A but no lora_B", Refused(basePath, half), StringComparison.Ordinal);
    }

    private static string Refused(string basePath, string adapter) =>
        Assert.Throws<ModelFolderException>(() => ModelFolder.Open(basePath, adapter)).Message;

    private MergeResult Merge(string name, string basePath, (string Path, string? Adapter) expert, string e2Path)
    {
        var folder = ModelFolder.Open(expert.Path, expert.Adapter);
        try
        {
            return new MergeEngine().Run(
                new MergePlan
                {
                    Base = _dir.Input("base", basePath),
                    Models = [new MergeInput("e1", folder), _dir.Input("e2", e2Path)],
                    Strategy = new WeightedSumStrategy(),
                    Weights = [0.6, 0.3],
                },
                new MergeOptions { OutputPath = _dir.File(name), MaxParallelism = 2, BlockElements = 13 });
        }
        finally
        {
            folder.Dispose();
        }
    }

    private static byte[] Bytes(ModelTensor t)
    {
        var bytes = new byte[t.ByteLength];
        ModelFolder.ReadBytes(t, 0, bytes);
        return bytes;
    }

    /// <summary>A PEFT adapter folder for <see cref="TinyModels.Llama"/> (hidden size 8) with seeded random A and B in float32.</summary>
    private string WriteAdapter(string name, int rank, double alpha, bool rsLora, string[]? targets, string[] modules,
        int? rankInFile = null, (string Key, bool Value)? extraConfig = null, bool dropB = false)
    {
        var folder = _dir.File(name);
        Directory.CreateDirectory(folder);
        var config = new Dictionary<string, object?>
        {
            ["peft_type"] = "LORA",
            ["r"] = rank,
            ["lora_alpha"] = alpha,
            ["use_rslora"] = rsLora,
            ["target_modules"] = targets is null ? ".*\\.(q_proj|v_proj)" : targets,
            ["bias"] = "none",
        };
        if (extraConfig is { } extra)
        {
            config[extra.Key] = extra.Value;
        }
        File.WriteAllText(Path.Combine(folder, "adapter_config.json"), JsonSerializer.Serialize(config));
        var random = new Random(name.Length * 31);
        var tensors = new List<(string, SafeTensorsDType, long[], byte[])>();
        var r = rankInFile ?? rank;
        foreach (var module in modules)
        {
            var outFeatures = TinyModels.Llama.FirstOrDefault(t => t.Name == module + ".weight").Shape?[0] ?? 8;
            float[] Random(long n) => [.. Enumerable.Range(0, (int)n).Select(_ => (float)((random.NextDouble() * 2) - 1))];
            tensors.Add(($"base_model.model.{module}.lora_A.weight", SafeTensorsDType.F32, [r, 8], SafeTensorsTestData.Bytes(Random(r * 8))));
            if (!dropB)
            {
                tensors.Add(($"base_model.model.{module}.lora_B.weight", SafeTensorsDType.F32, [outFeatures, r], SafeTensorsTestData.Bytes(Random(outFeatures * r))));
            }
        }
        SafeTensorsTestData.Write(Path.Combine(folder, "adapter_model.safetensors"), [.. tensors]);
        return folder;
    }
}
