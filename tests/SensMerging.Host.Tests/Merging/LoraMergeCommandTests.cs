using System.Security.Cryptography;
using System.Text.Json;
using SensMerging.Core.SafeTensors;
using SensMerging.Registry;

namespace SensMerging.Host.Tests.Merging;

/// <summary><c>sensmerge merge</c> with a <c>model+adapter</c> reference (mergekit's LoRA syntax), end to end.</summary>
public sealed class LoraMergeCommandTests : IDisposable
{
    private const int Rank = 2;
    private const double Alpha = 6;
    private static readonly string[] Modules = ["model.layers.0.self_attn.q_proj", "model.layers.1.mlp.up_proj"];

    private readonly string _root = TestPaths.NewTempDir("lora");
    private readonly string _registry;
    private readonly string _plugins = Path.Combine(TestPaths.RepoRoot, "plugins.json");

    public LoraMergeCommandTests() => _registry = Path.Combine(_root, "registry", "merges.db");

    public void Dispose() => Directory.Delete(_root, recursive: true);

    [Fact]
    public async Task A_model_plus_adapter_reference_merges_as_the_explicitly_merged_model()
    {
        var models = Path.Combine(_root, "models");
        var baseDir = Path.Combine(models, "base");
        var baseWeights = TinyModels.Write(baseDir, 1);
        var expert = Path.Combine(models, "expert-a");
        TinyModels.Write(expert, 2, baseWeights);
        var adapter = Path.Combine(models, "adapter");
        var factors = WriteAdapter(adapter);
        // The full model by hand: W + (alpha / r) * B A in double precision, rounded once to float32.
        var explicitDir = Path.Combine(models, "explicit");
        TinyModels.Write(explicitDir, 1, edit: (name, data) =>
        {
            if (factors.TryGetValue(name, out var f))
            {
                var columns = data.Length / f.Out;
                for (var i = 0; i < f.Out; i++)
                {
                    for (var j = 0; j < columns; j++)
                    {
                        double sum = 0;
                        for (var k = 0; k < Rank; k++)
                        {
                            sum += (double)f.B[(i * Rank) + k] * f.A[(k * columns) + j];
                        }
                        data[(i * columns) + j] = (float)(data[(i * columns) + j] + (Alpha / Rank * sum));
                    }
                }
            }
        });

        var (viaLora, id) = await Merge("lora", $"{baseDir}+{adapter}", baseDir, expert);
        var (viaExplicit, _) = await Merge("explicit", explicitDir, baseDir, expert);
        Assert.Equal(Sha256(Path.Combine(viaExplicit, "model.safetensors")), Sha256(Path.Combine(viaLora, "model.safetensors")));

        using var registry = LiteDbMergeRegistry.Open(new RegistryOptions { Path = _registry });
        var full = await registry.GetAsync(id) ?? throw new InvalidOperationException("no record");
        Assert.Equal(4, full.Inputs.Count);
        var model = full.Inputs.Single(i => i.Name == $"{baseDir}+{adapter}");
        Assert.Equal((baseDir, baseDir), (model.Reference, model.LocalPath));
        var adapterInput = full.Inputs.Single(i => i.Name == $"{baseDir}+{adapter} (LoRA adapter)");
        Assert.Equal((adapter, adapter), (adapterInput.Reference, adapterInput.LocalPath));
        Assert.Equal(Sha256(Path.Combine(adapter, "adapter_model.safetensors")), adapterInput.Files.Single(f => f.Path == "adapter_model.safetensors").Sha256);
    }

    [Fact]
    public async Task A_hub_model_plus_hub_adapter_is_pulled_and_pinned_on_both_sides()
    {
        var repos = Path.Combine(_root, "repos");
        var baseDir = Path.Combine(repos, "acme", "base");
        TinyModels.Write(baseDir, 1);
        var adapter = Path.Combine(repos, "acme", "adapter");
        WriteAdapter(adapter);
        await using var server = await SensMerging.Hub.Server.HubServer.StartAsync(new SensMerging.Hub.Server.FolderRepositorySource(repos));
        var config = Path.Combine(_root, "hub.yaml");
        File.WriteAllText(config, "merge_method: task_arithmetic\nbase_model: acme/base\nmodels:\n  - model: acme/base@main+acme/adapter\n    parameters: {weight: 1.0}\n");
        var env = new Dictionary<string, string>
        {
            ["HF_ENDPOINT"] = server.Endpoint,
            ["HF_HUB_CACHE"] = Path.Combine(_root, "hf-cache"),
            ["HF_HUB_OFFLINE"] = "0",
        };
        var output = Path.Combine(_root, "hub-out");

        var (exit, stdout, stderr) = await Processes.RunAsync("dotnet",
            [TestPaths.HostDll, "merge", config, "--out", output, "--plugins", _plugins, "--registry", _registry], environment: env);

        Assert.True(exit == 0, stderr + stdout);
        var (local, _) = await Merge("local", $"{baseDir}+{adapter}", baseDir, null);
        Assert.Equal(Sha256(Path.Combine(local, "model.safetensors")), Sha256(Path.Combine(output, "model.safetensors")));
        using var http = new HttpClient();
        string Sha(string repo) => JsonDocument.Parse(http.GetStringAsync($"{server.Endpoint}/api/models/{repo}").GetAwaiter().GetResult()).RootElement.GetProperty("sha").GetString()!;
        var id = stdout.Split("registry id ")[1].Trim();
        using var registry = LiteDbMergeRegistry.Open(new RegistryOptions { Path = _registry });
        var record = await registry.GetAsync(id) ?? throw new InvalidOperationException("no record");
        var adapterInput = record.Inputs.Single(i => i.Name == "acme/base@main+acme/adapter (LoRA adapter)");
        Assert.Equal(("acme/adapter", Sha("acme/adapter")), (adapterInput.Reference, adapterInput.ResolvedCommit));
        Assert.StartsWith(Path.Combine(_root, "hf-cache"), adapterInput.LocalPath, StringComparison.Ordinal);
        Assert.Equal(("acme/base@main", Sha("acme/base")), (record.Inputs.Single(i => i.Name == "acme/base@main+acme/adapter").Reference, record.Inputs.Single(i => i.Name == "acme/base@main+acme/adapter").ResolvedCommit));
        Assert.Contains($"acme/base@{Sha("acme/base")}+acme/adapter@{Sha("acme/adapter")}", File.ReadAllText(Path.Combine(output, "README.md")), StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_missing_adapter_or_one_that_does_not_fit_fails_the_merge_naming_it()
    {
        var baseDir = Path.Combine(_root, "base");
        TinyModels.Write(baseDir, 1);
        var missing = Path.Combine(_root, "nowhere");
        var (exit, stdout, stderr) = await SensMergeMerge("missing", $"{baseDir}+{missing}", baseDir);
        Assert.True(exit != 0, stdout);
        Assert.Contains($"LoRA adapter '{missing}': folder '{missing}' does not exist", stderr, StringComparison.Ordinal);

        var adapter = Path.Combine(_root, "adapter");
        WriteAdapter(adapter);
        File.WriteAllText(Path.Combine(adapter, "adapter_config.json"), $$"""{"peft_type":"LORA","r":{{Rank + 1}},"lora_alpha":{{Alpha}},"target_modules":["q_proj","up_proj"]}""");
        (exit, stdout, stderr) = await SensMergeMerge("rank", $"{baseDir}+{adapter}", baseDir);
        Assert.True(exit != 0, stdout);
        Assert.Contains("has rank 2 ([2, 16]), but adapter_config.json says r = 3", stderr, StringComparison.Ordinal);
        Assert.False(Directory.Exists(Path.Combine(_root, "out-rank")));

        var inside = Path.Combine(adapter, "merged");
        (exit, stdout, stderr) = await Processes.SensMergeAsync(["merge", Path.Combine(_root, "rank.yaml"), "--out", inside, "--plugins", _plugins, "--registry", _registry]);
        Assert.True(exit != 0, stdout);
        Assert.Contains($"lies inside the LoRA adapter folder '{adapter}'", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Extract_lora_writes_an_adapter_that_merges_back_to_the_fine_tune()
    {
        var baseDir = Path.Combine(_root, "base");
        var baseWeights = TinyModels.Write(baseDir, 1);
        // A fine-tune whose linear updates have rank 2 (and a changed norm, which an adapter does not carry).
        var finetune = Path.Combine(_root, "finetune");
        var random = new Random(3);
        var ft = TinyModels.Write(finetune, 1, edit: (name, data) =>
        {
            if (name.EndsWith("_proj.weight", StringComparison.Ordinal))
            {
                const int columns = 16;
                for (var k = 0; k < 2; k++)
                {
                    var u = Enumerable.Range(0, data.Length / columns).Select(_ => (random.NextDouble() * 2) - 1).ToArray();
                    var v = Enumerable.Range(0, columns).Select(_ => (random.NextDouble() * 2) - 1).ToArray();
                    for (var i = 0; i < data.Length; i++)
                    {
                        data[i] += (float)(0.3 * u[i / columns] * v[i % columns]);
                    }
                }
            }
            else if (name == "model.norm.weight")
            {
                data[0] += 1;
            }
        });
        var adapter = Path.Combine(_root, "extracted");

        var (exit, stdout, stderr) = await Processes.SensMergeAsync(["extract-lora", baseDir, finetune, "--out", adapter, "--energy", "0.999999", "--plugins", _plugins, "--registry", _registry]);

        Assert.True(exit == 0, stderr + stdout);
        Assert.Contains($"wrote a rank-2 LoRA adapter of 4 modules to {adapter}", stdout, StringComparison.Ordinal);
        Assert.Contains("model.layers.0.self_attn.q_proj [16, 16]: energy kept 100.00%", stdout, StringComparison.Ordinal);
        Assert.Contains("warning: 1 tensors differ but are not linear weights, so the adapter does not carry them: model.norm.weight", stderr, StringComparison.Ordinal);
        using (var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(adapter, "adapter_config.json"))))
        {
            Assert.Equal((2, 2), (config.RootElement.GetProperty("r").GetInt32(), config.RootElement.GetProperty("lora_alpha").GetInt32()));
            Assert.Equal(["q_proj", "up_proj"], config.RootElement.GetProperty("target_modules").EnumerateArray().Select(e => e.GetString()));
        }

        var (merged, _) = await Merge("extracted", $"{baseDir}+{adapter}", baseDir, null);
        using var folder = SensMerging.Core.Models.ModelFolder.Open(merged);
        foreach (var name in TinyModels.Tensors.Select(t => t.Name).Where(n => n.EndsWith("_proj.weight", StringComparison.Ordinal)))
        {
            using var tensor = folder.ReadTensor(name);
            var got = tensor.data<float>().ToArray();
            for (var i = 0; i < got.Length; i++)
            {
                Assert.True(Math.Abs(got[i] - ft[name][i]) <= 1e-5f, $"{name}[{i}]: {got[i]} != {ft[name][i]}");
            }
        }
        Assert.NotEqual(baseWeights["model.layers.0.self_attn.q_proj.weight"][0], ft["model.layers.0.self_attn.q_proj.weight"][0]);
    }

    private async Task<(string Output, string Id)> Merge(string name, string loraModel, string baseDir, string? expert)
    {
        var output = Path.Combine(_root, "out-" + name);
        var config = Path.Combine(_root, name + ".yaml");
        File.WriteAllText(config, expert is null
            ? $"merge_method: task_arithmetic\nbase_model: {baseDir}\nmodels:\n  - model: {loraModel}\n    parameters: {{weight: 1.0}}\ndtype: float32\n"
            : $$"""
            merge_method: task_arithmetic
            base_model: {{baseDir}}
            models:
              - model: {{loraModel}}
                parameters: {weight: 0.7}
              - model: {{expert}}
                parameters: {weight: 0.5}
            dtype: float32
            """);
        var (exit, stdout, stderr) = await Processes.SensMergeAsync(["merge", config, "--out", output, "--plugins", _plugins, "--registry", _registry]);
        Assert.True(exit == 0, stderr + stdout);
        return (output, stdout.Split("registry id ")[1].Trim());
    }

    private Task<(int ExitCode, string StdOut, string StdErr)> SensMergeMerge(string name, string loraModel, string baseDir)
    {
        var config = Path.Combine(_root, name + ".yaml");
        File.WriteAllText(config, $"merge_method: task_arithmetic\nbase_model: {baseDir}\nmodels:\n  - model: {loraModel}\n    parameters: {{weight: 1.0}}\n");
        return Processes.SensMergeAsync(["merge", config, "--out", Path.Combine(_root, "out-" + name), "--plugins", _plugins, "--registry", _registry]);
    }

    /// <summary>A PEFT adapter for two of <see cref="TinyModels"/>' projections; returns A and B by base weight name.</summary>
    private static Dictionary<string, (float[] A, float[] B, int Out)> WriteAdapter(string folder)
    {
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "adapter_config.json"), JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["peft_type"] = "LORA",
            ["r"] = Rank,
            ["lora_alpha"] = Alpha,
            ["target_modules"] = new[] { "q_proj", "up_proj" },
            ["base_model_name_or_path"] = "base",
        }));
        var random = new Random(7);
        var factors = new Dictionary<string, (float[] A, float[] B, int Out)>();
        var plan = new List<TensorPlanEntry>();
        foreach (var module in Modules)
        {
            var shape = TinyModels.Tensors.Single(t => t.Name == module + ".weight").Shape;
            float[] Random(long n) => [.. Enumerable.Range(0, (int)n).Select(_ => (float)((random.NextDouble() * 2) - 1))];
            factors[module + ".weight"] = (Random(Rank * shape[1]), Random(shape[0] * Rank), (int)shape[0]);
            plan.Add(new TensorPlanEntry($"base_model.model.{module}.lora_A.weight", SafeTensorsDType.F32, [Rank, shape[1]]));
            plan.Add(new TensorPlanEntry($"base_model.model.{module}.lora_B.weight", SafeTensorsDType.F32, [shape[0], Rank]));
        }
        using var writer = new SafeTensorsWriter(Path.Combine(folder, "adapter_model.safetensors"), plan);
        foreach (var module in Modules)
        {
            var f = factors[module + ".weight"];
            writer.WriteTensor($"base_model.model.{module}.lora_A.weight", System.Runtime.InteropServices.MemoryMarshal.AsBytes(f.A.AsSpan()));
            writer.WriteTensor($"base_model.model.{module}.lora_B.weight", System.Runtime.InteropServices.MemoryMarshal.AsBytes(f.B.AsSpan()));
        }
        writer.Complete();
        return factors;
    }

    private static string Sha256(string file) => Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(file)));
}
