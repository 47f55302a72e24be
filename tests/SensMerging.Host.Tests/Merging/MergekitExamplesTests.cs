using System.Text.Json;
using SensMerging.Core.SafeTensors;
using SensMerging.Hub.Server;
using SensMerging.Registry;

namespace SensMerging.Host.Tests.Merging;

/// <summary>
/// The configs of mergekit's <c>examples/</c> folder (commit a6e4028), all six of which use only safetensors inputs,
/// as a mergekit user has them: the same Hub repository names, methods, parameters (gradients,
/// filters, per-model densities) and <c>dtype</c>, run unchanged by <c>sensmerge merge</c> against tiny stand-ins with the
/// real models' tensor names and layer counts, served by the project's Hub server on loopback. The stand-ins are stored
/// in different dtypes (float32, float16, bfloat16), which mergekit casts to the config's <c>dtype</c>.
/// </summary>
public sealed class MergekitExamplesTests : IDisposable
{
    private readonly string _root = TestPaths.NewTempDir("mergekit-examples");
    private readonly string _registry;
    private readonly string _plugins = Path.Combine(TestPaths.RepoRoot, "plugins.json");

    public MergekitExamplesTests() => _registry = Path.Combine(_root, "registry", "merges.db");

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private static readonly Dictionary<string, string> Examples = new()
    {
        ["linear"] = """
            models:
              - model: psmathur/orca_mini_v3_13b
                parameters:
                  weight: 1.0
              - model: WizardLM/WizardLM-13B-V1.2
                parameters:
                  weight: 0.3
              - model: garage-bAInd/Platypus2-13B
                parameters:
                  weight: 0.5
            merge_method: linear
            dtype: float16
            """,
        ["ties"] = """
            models:
              - model: psmathur/orca_mini_v3_13b
                parameters:
                  density: [1, 0.7, 0.1]
                  weight: 1.0
              - model: garage-bAInd/Platypus2-13B
                parameters:
                  density: 0.5
                  weight: [0, 0.3, 0.7, 1]
              - model: WizardLM/WizardMath-13B-V1.0
                parameters:
                  density: 0.33
                  weight:
                    - filter: mlp
                      value: 0.5
                    - value: 0
            merge_method: ties
            base_model: TheBloke/Llama-2-13B-fp16
            parameters:
              normalize: true
              int8_mask: true
            dtype: float16
            """,
        ["gradient-slerp"] = """
            slices:
              - sources:
                  - model: psmathur/orca_mini_v3_13b
                    layer_range: [0, 40]
                  - model: garage-bAInd/Platypus2-13B
                    layer_range: [0, 40]
            merge_method: slerp
            base_model: psmathur/orca_mini_v3_13b
            parameters:
              t:
                - filter: self_attn
                  value: [0, 0.5, 0.3, 0.7, 1]
                - filter: mlp
                  value: [1, 0.5, 0.7, 0.3, 0]
                - value: 0.5
            dtype: float16
            """,
        ["bio-merge"] = """
            models:
              - model: mistralai/Mistral-7B-Instruct-v0.2
                parameters:
                  density: 0.5
                  weight: 0.5
              - model: BioMistral/BioMistral-7B
                parameters:
                  density: 0.5
                  weight: 0.5
            merge_method: ties
            base_model: mistralai/Mistral-7B-v0.1
            parameters:
              normalize: false
              int8_mask: true
            dtype: float16
            """,
        ["orcamini-platy-44layer"] = """
            slices:
              - sources:
                - model: psmathur/orca_mini_v3_13b
                  layer_range: [0, 24]
              - sources:
                - model: garage-bAInd/Platypus2-13B
                  layer_range: [20, 40]
            merge_method: passthrough
            dtype: float16
            """,
        ["arcee_fusion"] = """
            models:
              - model: model_a
              - model: model_b
            merge_method: arcee_fusion
            base_model: model_a
            dtype: bfloat16
            """,
    };

    [Fact]
    public async Task Every_safetensors_example_runs_unchanged_on_stand_ins_served_under_its_hub_names()
    {
        var repos = Path.Combine(_root, "repos");
        var llama = TinyModels.WriteStandIn(Path.Combine(repos, "TheBloke", "Llama-2-13B-fp16"), 1, 40, SafeTensorsDType.F16, "llama");
        var orca = TinyModels.WriteStandIn(Path.Combine(repos, "psmathur", "orca_mini_v3_13b"), 2, 40, SafeTensorsDType.F32, "llama", llama);
        var platypus = TinyModels.WriteStandIn(Path.Combine(repos, "garage-bAInd", "Platypus2-13B"), 3, 40, SafeTensorsDType.BF16, "llama", llama);
        var wizard = TinyModels.WriteStandIn(Path.Combine(repos, "WizardLM", "WizardLM-13B-V1.2"), 4, 40, SafeTensorsDType.F16, "llama", llama);
        TinyModels.WriteStandIn(Path.Combine(repos, "WizardLM", "WizardMath-13B-V1.0"), 5, 40, SafeTensorsDType.F16, "llama", llama);
        var mistral = TinyModels.WriteStandIn(Path.Combine(repos, "mistralai", "Mistral-7B-v0.1"), 6, 32, SafeTensorsDType.BF16, "mistral");
        TinyModels.WriteStandIn(Path.Combine(repos, "mistralai", "Mistral-7B-Instruct-v0.2"), 7, 32, SafeTensorsDType.BF16, "mistral", mistral);
        TinyModels.WriteStandIn(Path.Combine(repos, "BioMistral", "BioMistral-7B"), 8, 32, SafeTensorsDType.BF16, "mistral", mistral);
        // arcee_fusion's example names local folders beside the config.
        var configs = Path.Combine(_root, "configs");
        var modelA = TinyModels.WriteStandIn(Path.Combine(configs, "model_a"), 9, 2, SafeTensorsDType.BF16, "llama");
        TinyModels.WriteStandIn(Path.Combine(configs, "model_b"), 10, 2, SafeTensorsDType.BF16, "llama", modelA);

        await using var server = await HubServer.StartAsync(new FolderRepositorySource(repos));
        var env = new Dictionary<string, string>
        {
            ["HF_ENDPOINT"] = server.Endpoint,
            ["HF_HUB_CACHE"] = Path.Combine(_root, "hf-cache"),
            ["HF_HUB_OFFLINE"] = "0",
        };
        var ids = new Dictionary<string, string>();
        foreach (var (name, yaml) in Examples)
        {
            var config = Path.Combine(configs, name + ".yml");
            await File.WriteAllTextAsync(config, yaml);
            var (exit, stdout, stderr) = await Processes.RunAsync("dotnet",
                [TestPaths.HostDll, "merge", config, "--out", Path.Combine(_root, name), "--plugins", _plugins, "--registry", _registry], environment: env);
            Assert.True(exit == 0, $"{name}: {stderr}{stdout}");
            ids[name] = stdout.Split("registry id ")[1].Trim();
        }

        using var registry = LiteDbMergeRegistry.Open(new RegistryOptions { Path = _registry });
        foreach (var (name, yaml) in Examples)
        {
            var dtype = yaml.Contains("dtype: bfloat16", StringComparison.Ordinal) ? SafeTensorsDType.BF16 : SafeTensorsDType.F16;
            var folder = Path.Combine(_root, name);
            using var weights = SafeTensorsFile.Open(Path.Combine(folder, "model.safetensors"));
            // mergekit's rule: every input cast to dtype, the output written in it (no out_dtype here), config.json says so;
            // arcee_fusion's method returns float32 (its mask is float32), which mergekit writes as it is.
            Assert.All(weights.Tensors, t => Assert.Equal(name == "arcee_fusion" ? SafeTensorsDType.F32 : dtype, t.DType));
            using var config = JsonDocument.Parse(await File.ReadAllTextAsync(Path.Combine(folder, "config.json")));
            Assert.Equal(dtype.TorchDtypeName, config.RootElement.GetProperty("torch_dtype").GetString());
            Assert.Equal(name == "orcamini-platy-44layer" ? 44 : name == "arcee_fusion" ? 2 : name.StartsWith("bio", StringComparison.Ordinal) ? 32 : 40,
                config.RootElement.GetProperty("num_hidden_layers").GetInt32());
            var record = await registry.GetAsync(ids[name]) ?? throw new InvalidOperationException($"no record for {name}");
            Assert.Equal(MergeStatus.Succeeded, record.Status);
            Assert.Equal(dtype.TorchDtypeName, record.Dtype);
            Assert.Null(record.OutDtype);
        }

        // The frankenmerge: orca's layers 0-23, then Platypus's 20-39 renumbered 24-43; embeddings from orca (the first
        // slice), final norm and lm_head from Platypus (the last), each cast to float16.
        using (var franken = SafeTensorsFile.Open(Path.Combine(_root, "orcamini-platy-44layer", "model.safetensors")))
        {
            Assert.Equal(3 + (44 * 9), franken.Tensors.Count);
            foreach (var tensor in franken.Tensors)
            {
                var block = Abstractions.LayerGroups.BlockIndex(tensor.Name);
                var (source, name) = block < 0
                    ? (tensor.Name.StartsWith("model.embed", StringComparison.Ordinal) ? orca : platypus, tensor.Name)
                    : block < 24 ? (orca, tensor.Name) : (platypus, tensor.Name.Replace($"layers.{block}.", $"layers.{block - 4}.", StringComparison.Ordinal));
                var bytes = new byte[tensor.ByteLength];
                franken.ReadBytes(tensor, bytes);
                for (var i = 0; i < source[name].Length; i++)
                {
                    Assert.Equal((Half)source[name][i], BitConverter.UInt16BitsToHalf(BitConverter.ToUInt16(bytes, i * 2)));
                }
            }
        }

        // The linear example as mergekit computes it in float16 (torch 2.x on the CPU): the weights a float16 tensor, each
        // product w_i * x_i rounded, their sum accumulated in float32 in model order and rounded, divided by the rounded
        // sum of the weights and rounded: the same bits.
        static float R(double v) => (float)(Half)(float)v;
        float[] w = [R(1.0), R(0.3), R(0.5)];
        var total = R(w[0] + w[1] + w[2]);
        using var linear = SafeTensorsFile.Open(Path.Combine(_root, "linear", "model.safetensors"));
        foreach (var tensor in linear.Tensors)
        {
            var bytes = new byte[tensor.ByteLength];
            linear.ReadBytes(tensor, bytes);
            var name = tensor.Name;
            for (var i = 0; i < orca[name].Length; i++)
            {
                var sum = R(w[0] * R(orca[name][i])) + R(w[1] * R(wizard[name][i])) + R(w[2] * R(platypus[name][i]));
                var expected = R(R(sum) / total);
                var actual = (float)BitConverter.UInt16BitsToHalf(BitConverter.ToUInt16(bytes, i * 2));
                Assert.True(expected.Equals(actual), $"{name}[{i}]: {actual} != {expected}");
            }
        }
    }
}
