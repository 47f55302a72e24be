using System.Security.Cryptography;
using System.Text.Json;
using SensMerging.Hub.Server;
using SensMerging.Registry;

namespace SensMerging.Host.Tests.Merging;

/// <summary>
/// <c>sensmerge merge</c> end to end, as a user runs it: a real process, real plugins from artifacts/plugins, model
/// folders on disk (or pulled from the project's Hub server on loopback), a real LiteDB registry file.
/// </summary>
public sealed class MergeCommandTests : IDisposable
{
    private readonly string _root = TestPaths.NewTempDir("merge");
    private readonly string _registry;
    private readonly string _plugins = Path.Combine(TestPaths.RepoRoot, "plugins.json");

    public MergeCommandTests() => _registry = Path.Combine(_root, "registry", "merges.db");

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private (string Base, string A, string B) MakeModels(string parent, long[]? scaleShape = null)
    {
        var baseDir = Path.Combine(parent, "base");
        var weights = TinyModels.Write(baseDir, 1, scaleShape: scaleShape);
        var a = Path.Combine(parent, "expert-a");
        var b = Path.Combine(parent, "expert-b");
        TinyModels.Write(a, 2, weights, scaleShape: scaleShape);
        TinyModels.Write(b, 3, weights, scaleShape: scaleShape);
        return (baseDir, a, b);
    }

    /// <summary>A base and two experts under models/ (expert-b's deltas three times expert-a's), with their values.</summary>
    private (string Parent, string BaseDir, Dictionary<string, float[]> Base, Dictionary<string, float[]> A, Dictionary<string, float[]> B) BaseAndTwoExperts()
    {
        var parent = Path.Combine(_root, "models");
        var baseDir = Path.Combine(parent, "base");
        var baseWeights = TinyModels.Write(baseDir, 1);
        var a = TinyModels.Write(Path.Combine(parent, "expert-a"), 2, baseWeights);
        var b = TinyModels.Write(Path.Combine(parent, "expert-b"), 3, baseWeights, deltaScale: 0.3f);
        return (parent, baseDir, baseWeights, a, b);
    }

    private string Config(string name, string yaml)
    {
        var path = Path.Combine(_root, name);
        File.WriteAllText(path, yaml);
        return path;
    }

    private Task<(int ExitCode, string StdOut, string StdErr)> SensMerge(params string[] args) =>
        Processes.SensMergeAsync([.. args, "--plugins", _plugins, "--registry", _registry]);

    private static string Sha256(string file) => Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(file)));

    [Fact]
    public async Task Ties_merge_writes_a_model_and_a_complete_registry_record()
    {
        var (baseDir, a, b) = MakeModels(Path.Combine(_root, "models"));
        var config = Config("ties.yaml", $$"""
            merge_method: ties
            base_model: {{baseDir}}
            models:
              - model: {{a}}
                parameters: {weight: 1.0, density: 0.5}
              - model: {{b}}
                parameters: {weight: 0.5, density: 0.7}
            parameters:
              normalize: true
              lambda: 0.9
            dtype: float32
            """);
        var output = Path.Combine(_root, "out");

        var (exit, stdout, stderr) = await SensMerge("merge", config, "--out", output);

        Assert.True(exit == 0, stderr + stdout);
        Assert.True(File.Exists(Path.Combine(output, "model.safetensors")));
        Assert.True(File.Exists(Path.Combine(output, "config.json")));
        Assert.True(File.Exists(Path.Combine(output, "tokenizer.json")));
        var id = stdout.Split("registry id ")[1].Trim();
        Assert.Contains(id, File.ReadAllText(Path.Combine(output, "README.md")), StringComparison.Ordinal);

        using var registry = LiteDbMergeRegistry.Open(new RegistryOptions { Path = _registry });
        var record = await registry.GetAsync(id) ?? throw new InvalidOperationException("no record");
        Assert.Equal(MergeStatus.Succeeded, record.Status);
        Assert.Equal("ties", record.Strategy!.Component);
        Assert.Equal("task_arithmetic_family", record.Strategy.PluginId);
        Assert.Equal(Sha256(Path.Combine(TestPaths.PluginFolder("SensMerging.Strategies.TaskArithmeticFamily"), "SensMerging.Strategies.TaskArithmeticFamily.dll")), record.Strategy.AssemblySha256);
        Assert.Equal(3, record.Inputs.Count);
        foreach (var input in record.Inputs)
        {
            var file = input.Files.Single(f => f.Path == "model.safetensors");
            Assert.Equal(Sha256(Path.Combine(input.LocalPath!, "model.safetensors")), file.Sha256);
        }
        Assert.Equal(ModelRole.Base, record.Inputs.Single(i => i.LocalPath == baseDir).Role);
        Assert.Equal(output, record.Outputs!.Folder);
        foreach (var file in record.Outputs.Files)
        {
            Assert.Equal(Sha256(Path.Combine(output, file.Path)), file.Sha256);
        }
        Assert.Equal(TinyModels.Tensors.Length, record.Outputs.TensorCount);
        Assert.True(record.Durations.ContainsKey(Phases.Total));
        Assert.Contains("lambda", record.Parameters.Keys);
        Assert.Equal(0.5, record.ModelParameters[a]["density"].AsDouble);

        await RegistryCommandsAnswer(id, a, output);
    }

    /// <summary>The registry commands a person runs after a merge: valid JSON for scripts, text, lineage, diff, plot.</summary>
    private async Task RegistryCommandsAnswer(string id, string input, string output)
    {
        var (exit, stdout, stderr) = await SensMerge("registry", "list", "--json", "--strategy", "ties", "--status", "succeeded");
        Assert.True(exit == 0, stderr);
        var list = JsonDocument.Parse(stdout).RootElement;
        Assert.Equal(id, Assert.Single(list.EnumerateArray()).GetProperty("id").GetString());
        (exit, stdout, stderr) = await SensMerge("registry", "list", "--json", "--strategy", "dare_ties");
        Assert.True(exit == 0, stderr);
        Assert.Empty(JsonDocument.Parse(stdout).RootElement.EnumerateArray());
        (exit, stdout, stderr) = await SensMerge("registry", "list", "--json", "--model", input, "--since", DateTime.UtcNow.AddHours(-1).ToString("s", System.Globalization.CultureInfo.InvariantCulture));
        Assert.True(exit == 0, stderr);
        Assert.Single(JsonDocument.Parse(stdout).RootElement.EnumerateArray());

        (exit, stdout, stderr) = await SensMerge("registry", "show", id[..12], "--json");
        Assert.True(exit == 0, stderr);
        var shown = JsonDocument.Parse(stdout).RootElement;
        Assert.Equal("succeeded", shown.GetProperty("status").GetString());
        Assert.Equal(output, shown.GetProperty("outputs").GetProperty("folder").GetString());

        (exit, stdout, stderr) = await SensMerge("registry", "lineage", output, "--json");
        Assert.True(exit == 0, stderr);
        Assert.Equal(id, JsonDocument.Parse(stdout).RootElement.GetProperty("producedBy")[0].GetProperty("id").GetString());

        (exit, stdout, stderr) = await SensMerge("registry", "export", id);
        Assert.True(exit == 0, stderr);
        Assert.Equal("sensmerge.merge", JsonDocument.Parse(stdout).RootElement.GetProperty("kind").GetString());

        (exit, stdout, stderr) = await SensMerge("registry", "diff", id, id, "--json");
        Assert.True(exit == 0, stderr);
        JsonDocument.Parse(stdout);

        (exit, _, stderr) = await SensMerge("registry", "show", "m-does-not-exist");
        Assert.Equal(1, exit);
        Assert.Contains("m-does-not-exist", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Seeded_dare_ties_merge_is_reproduced_byte_for_byte()
    {
        var (baseDir, a, b) = MakeModels(Path.Combine(_root, "models"));
        var config = Config("dare.yaml", $$"""
            merge_method: dare_ties
            base_model: {{baseDir}}
            models:
              - model: {{a}}
                parameters: {weight: 1.0, density: 0.6}
              - model: {{b}}
                parameters: {weight: 1.0, density: 0.6}
            """);
        var (exit, stdout, stderr) = await SensMerge("merge", config, "--out", Path.Combine(_root, "dare"), "--seed", "1234");
        Assert.True(exit == 0, stderr + stdout);
        var id = stdout.Split("registry id ")[1].Trim();

        var (rexit, rout, rerr) = await SensMerge("registry", "reproduce", id, "--out", Path.Combine(_root, "dare-again"));

        Assert.True(rexit == 0, rerr + rout);
        Assert.Contains("identical", rout, StringComparison.Ordinal);
        Assert.Equal(File.ReadAllBytes(Path.Combine(_root, "dare", "model.safetensors")), File.ReadAllBytes(Path.Combine(_root, "dare-again", "model.safetensors")));

        // A different seed gives a different model: the comparison can fail.
        var (e2, o2, s2) = await SensMerge("merge", config, "--out", Path.Combine(_root, "dare-other"), "--seed", "99");
        Assert.True(e2 == 0, s2 + o2);
        Assert.NotEqual(File.ReadAllBytes(Path.Combine(_root, "dare", "model.safetensors")), File.ReadAllBytes(Path.Combine(_root, "dare-other", "model.safetensors")));
    }

    [Fact]
    public async Task A_bfloat16_config_rounds_like_mergekit_unless_float32_compute_is_asked_for_and_reproduced()
    {
        var parent = Path.Combine(_root, "bf16");
        var bf16 = Core.SafeTensors.SafeTensorsDType.BF16;
        var b = TinyModels.WriteStandIn(Path.Combine(parent, "base"), 1, 2, bf16, "llama");
        var x = TinyModels.WriteStandIn(Path.Combine(parent, "x"), 2, 2, bf16, "llama", b);
        var y = TinyModels.WriteStandIn(Path.Combine(parent, "y"), 3, 2, bf16, "llama", b);
        var config = Config("bf16.yaml", $$"""
            merge_method: task_arithmetic
            base_model: {{Path.Combine(parent, "base")}}
            models:
              - model: {{Path.Combine(parent, "x")}}
                parameters: {weight: 0.6}
              - model: {{Path.Combine(parent, "y")}}
                parameters: {weight: 0.9}
            parameters: {lambda: 0.7}
            dtype: bfloat16
            """);
        var (exit, stdout, stderr) = await SensMerge("merge", config, "--out", Path.Combine(_root, "bf16-mergekit"));
        Assert.True(exit == 0, stderr + stdout);
        Assert.DoesNotContain("rounds each result once", stderr, StringComparison.Ordinal);
        var (e32, o32, s32) = await SensMerge("merge", config, "--out", Path.Combine(_root, "bf16-float32"), "--compute-dtype", "float32");
        Assert.True(e32 == 0, s32 + o32);
        var id32 = o32.Split("registry id ")[1].Trim();

        // mergekit in bfloat16 (torch 2.x on the CPU): each operation computes in float32 and rounds; the weights are a
        // bfloat16 tensor; the sum over the models accumulates in float32; lambda enters as a float32.
        static float R(float v)
        {
            var bits = BitConverter.SingleToUInt32Bits(v);
            return BitConverter.UInt32BitsToSingle((bits + 0x7FFFu + ((bits >> 16) & 1u)) & 0xFFFF0000u);
        }
        var differ = 0;
        foreach (var name in b.Keys)
        {
            var mergekit = ReadBf16(Path.Combine(_root, "bf16-mergekit"), name);
            var once = ReadBf16(Path.Combine(_root, "bf16-float32"), name);
            for (var e = 0; e < mergekit.Length; e++)
            {
                var sum = R(R(x[name][e] - b[name][e]) * R(0.6f)) + R(R(y[name][e] - b[name][e]) * R(0.9f));
                Assert.Equal(R(b[name][e] + R(R(sum) * 0.7f)), mergekit[e]);
                var exact = b[name][e] + (0.7 * ((0.6 * (x[name][e] - b[name][e])) + (0.9 * (y[name][e] - b[name][e]))));
                Assert.True(Math.Abs(exact - once[e]) <= Math.Abs(exact) / 128, $"{name}[{e}]: {once[e]} is not {exact} rounded once");
                differ += mergekit[e] != once[e] ? 1 : 0;
            }
        }
        Assert.True(differ > 0, "float32 compute gave mergekit's bytes: the comparison above proves nothing");

        // The opt-in is recorded and passed again: the reproduction gives the float32-compute bytes.
        var (rexit, rout, rerr) = await SensMerge("registry", "reproduce", id32, "--out", Path.Combine(_root, "bf16-again"));
        Assert.True(rexit == 0, rerr + rout);
        Assert.Contains("compute dtype float32", rerr + rout, StringComparison.Ordinal);
        Assert.Equal(File.ReadAllBytes(Path.Combine(_root, "bf16-float32", "model.safetensors")), File.ReadAllBytes(Path.Combine(_root, "bf16-again", "model.safetensors")));

        var (bad, _, badErr) = await SensMerge("merge", config, "--out", Path.Combine(_root, "bf16-bad"), "--compute-dtype", "float16");
        Assert.NotEqual(0, bad);
        Assert.Contains("float32", badErr, StringComparison.Ordinal);
    }

    private static float[] ReadBf16(string folder, string tensor)
    {
        using var file = Core.SafeTensors.SafeTensorsFile.Open(Path.Combine(folder, "model.safetensors"));
        var info = file.GetTensor(tensor);
        Assert.Equal(Core.SafeTensors.SafeTensorsDType.BF16, info.DType);
        var bytes = new byte[info.ByteLength];
        file.ReadBytes(info, bytes);
        return [.. System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(bytes).ToArray().Select(h => BitConverter.UInt32BitsToSingle((uint)h << 16))];
    }

    [Fact]
    public async Task Slerp_and_model_stock_configs_merge_through_the_engine_to_the_published_formulas()
    {
        var (parent, baseDir, baseWeights, a, b) = BaseAndTwoExperts();
        var slerp = Config("slerp.yaml", $$"""
            merge_method: slerp
            base_model: {{baseDir}}
            models:
              - model: {{Path.Combine(parent, "expert-a")}}
            parameters:
              t: 0.35
            """);
        var stock = Config("stock.yaml", $$"""
            merge_method: model_stock
            base_model: {{baseDir}}
            models:
              - model: {{Path.Combine(parent, "expert-a")}}
                parameters: {weight: 1.0}
              - model: {{Path.Combine(parent, "expert-b")}}
                parameters: {weight: 3.0}
            """);
        foreach (var (config, output) in new[] { (slerp, "slerp-out"), (stock, "stock-out") })
        {
            var (exit, stdout, stderr) = await SensMerge("merge", config, "--out", Path.Combine(_root, output));
            Assert.True(exit == 0, stderr + stdout);
        }

        foreach (var (name, _) in TinyModels.Tensors)
        {
            // Independent double-precision formulas over the whole flattened tensor.
            double[] b0 = [.. baseWeights[name].Select(v => (double)v)];
            double[] x = [.. a[name].Select(v => (double)v)];
            var cos = Dot(b0, x) / Math.Sqrt(Dot(b0, b0) * Dot(x, x));
            var theta = Math.Acos(cos);
            double[] expectedSlerp = [.. b0.Select((v, i) => (Math.Sin(0.65 * theta) * v + Math.Sin(0.35 * theta) * x[i]) / Math.Sin(theta))];
            AssertClose(expectedSlerp, ReadF32(Path.Combine(_root, "slerp-out"), name), name);

            double[] da = [.. a[name].Select((v, i) => (double)v - baseWeights[name][i])];
            double[] db = [.. b[name].Select((v, i) => (double)v - baseWeights[name][i])];
            var c = Dot(da, db) / Math.Sqrt(Dot(da, da) * Dot(db, db));
            var t = 2 * c / (1 + c);
            double[] expectedStock = [.. b0.Select((v, i) => v + t * ((0.25 * da[i]) + (0.75 * db[i])))];
            AssertClose(expectedStock, ReadF32(Path.Combine(_root, "stock-out"), name), name);
        }

        static double Dot(double[] u, double[] v) => u.Select((e, i) => e * v[i]).Sum();
    }

    [Fact]
    public async Task Every_further_mergekit_method_merges_real_files_through_the_engine()
    {
        var (parent, baseDir, baseWeights, a, b) = BaseAndTwoExperts();
        var pathA = Path.Combine(parent, "expert-a");
        var pathB = Path.Combine(parent, "expert-b");
        // Shapes as mergekit's examples write them: arcee_fusion with the base listed among the models.
        var configs = new Dictionary<string, string>
        {
            ["della"] = $"merge_method: della\nbase_model: {baseDir}\nmodels:\n  - model: {pathA}\n    parameters: {{weight: 1.0, density: 0.5, epsilon: 0.2}}\n  - model: {pathB}\n    parameters: {{weight: 0.5, density: 0.6}}\nseed: 3\n",
            ["della_linear"] = $"merge_method: della_linear\nbase_model: {baseDir}\nmodels:\n  - model: {pathA}\n    parameters: {{weight: 1.0, density: 0.5}}\n  - model: {pathB}\n    parameters: {{weight: 0.5, density: 0.6}}\nparameters: {{lambda: 0.8}}\n",
            ["sce"] = $"merge_method: sce\nbase_model: {baseDir}\nmodels:\n  - model: {pathA}\n  - model: {pathB}\nparameters: {{select_topk: 0.5}}\n",
            ["nearswap"] = $"merge_method: nearswap\nbase_model: {baseDir}\nmodels:\n  - model: {pathA}\nparameters: {{t: 0.05}}\n",
            ["multislerp"] = $"merge_method: multislerp\nbase_model: {baseDir}\nmodels:\n  - model: {pathA}\n    parameters: {{weight: 1.0}}\n  - model: {pathB}\n    parameters: {{weight: 3.0}}\n",
            ["karcher"] = $"merge_method: karcher\nbase_model: {baseDir}\nmodels:\n  - model: {pathA}\n  - model: {pathB}\n",
            ["nuslerp"] = $"merge_method: nuslerp\nmodels:\n  - model: {pathA}\n    parameters: {{weight: 1.0}}\n  - model: {pathB}\n    parameters: {{weight: 1.0}}\nparameters: {{nuslerp_flatten: false}}\n",
            ["arcee_fusion"] = $"merge_method: arcee_fusion\nbase_model: {baseDir}\nmodels:\n  - model: {baseDir}\n  - model: {pathA}\n",
            ["ram"] = $"merge_method: ram\nbase_model: {baseDir}\nmodels:\n  - model: {pathA}\n  - model: {pathB}\n",
            ["ramplus_tl"] = $"merge_method: ramplus_tl\nbase_model: {baseDir}\nmodels:\n  - model: {pathA}\n  - model: {pathB}\nparameters: {{r: 0.2, alpha: 0.5}}\n",
            ["passthrough"] = $"merge_method: passthrough\nmodels:\n  - model: {pathA}\n    parameters:\n      scale:\n        - filter: mlp\n          value: 0.5\n        - value: 1.0\n",
        };
        foreach (var (method, yaml) in configs)
        {
            var (exit, stdout, stderr) = await SensMerge("merge", Config(method + ".yaml", yaml), "--out", Path.Combine(_root, method + "-out"));
            Assert.True(exit == 0, $"{method}: {stderr}{stdout}");
        }

        foreach (var (name, _) in TinyModels.Tensors)
        {
            foreach (var method in configs.Keys)
            {
                var merged = ReadF32(Path.Combine(_root, method + "-out"), name);
                Assert.All(merged, v => Assert.True(float.IsFinite(v), $"{method} {name}"));
            }
            // Independent formulas for the elementwise ones.
            double[] nearswap = [.. baseWeights[name].Select((x, i) =>
            {
                var w = Math.Clamp(0.05 / Math.Max(Math.Abs((double)x - a[name][i]), 1e-6), 0, 1);
                return (w * a[name][i]) + ((1 - w) * x);
            })];
            AssertClose(nearswap, ReadF32(Path.Combine(_root, "nearswap-out"), name), name);
            var scale = name.Contains(".mlp.", StringComparison.Ordinal) ? 0.5 : 1.0;
            AssertClose([.. a[name].Select(v => v * scale)], ReadF32(Path.Combine(_root, "passthrough-out"), name), name);
            // multislerp with a base: (sum w_i |d_i|) times the unit mean direction, around the base (weights 1/4, 3/4).
            double[] da = [.. a[name].Select((v, i) => (double)v - baseWeights[name][i])];
            double[] db = [.. b[name].Select((v, i) => (double)v - baseWeights[name][i])];
            var (na, nb) = (Math.Sqrt(da.Sum(v => v * v)), Math.Sqrt(db.Sum(v => v * v)));
            double[] mean = [.. da.Select((v, i) => (0.25 * v / (na + 1e-8)) + (0.75 * db[i] / (nb + 1e-8)))];
            var meanNorm = Math.Sqrt(mean.Sum(v => v * v));
            AssertClose([.. mean.Select((m, i) => baseWeights[name][i] + ((0.25 * na) + (0.75 * nb)) * m / meanNorm)], ReadF32(Path.Combine(_root, "multislerp-out"), name), name);
        }
    }

    /// <summary>
    /// The methods that reproduce mergekit's half-precision arithmetic (nearswap, ram, ramplus_tl, sce, model_stock) through the
    /// engine on bfloat16 files with <c>dtype: bfloat16</c>: no "rounds once" warning, tensors written in bfloat16 except
    /// ramplus_tl's (mergekit's float32 lambda makes its result float32, written as it is), and nearswap's values equal to
    /// mergekit's operations emulated here element by element (each rounded to bfloat16; t / d as reciprocal * t).
    /// </summary>
    [Fact]
    public async Task Half_precision_methods_give_mergekits_bfloat16_arithmetic_through_the_engine()
    {
        var (baseDir, baseValues, pathA, a, pathB) = BFloat16StandIns("bf16");
        var configs = new Dictionary<string, string>
        {
            ["nearswap"] = $"merge_method: nearswap\nbase_model: {baseDir}\nmodels:\n  - model: {pathA}\nparameters: {{t: 0.01}}\ndtype: bfloat16\n",
            ["ram"] = $"merge_method: ram\nbase_model: {baseDir}\nmodels:\n  - model: {pathA}\n  - model: {pathB}\ndtype: bfloat16\n",
            ["ramplus_tl"] = $"merge_method: ramplus_tl\nbase_model: {baseDir}\nmodels:\n  - model: {pathA}\n  - model: {pathB}\ndtype: bfloat16\n",
            ["sce"] = $"merge_method: sce\nbase_model: {baseDir}\nmodels:\n  - model: {pathA}\n  - model: {pathB}\nparameters: {{select_topk: 0.5}}\ndtype: bfloat16\n",
            ["model_stock"] = $"merge_method: model_stock\nbase_model: {baseDir}\nmodels:\n  - model: {pathA}\n  - model: {pathB}\ndtype: bfloat16\n",
        };
        foreach (var (method, yaml) in configs)
        {
            var output = Path.Combine(_root, "bf16-" + method);
            var (exit, stdout, stderr) = await SensMerge("merge", Config(method + "-bf16.yaml", yaml), "--out", output);
            Assert.True(exit == 0, $"{method}: {stderr}{stdout}");
            Assert.DoesNotContain("computes in float32 and rounds", stdout + stderr, StringComparison.Ordinal);
            using var weights = Core.SafeTensors.SafeTensorsFile.Open(Path.Combine(output, "model.safetensors"));
            var written = method == "ramplus_tl" ? Core.SafeTensors.SafeTensorsDType.F32 : Core.SafeTensors.SafeTensorsDType.BF16;
            Assert.All(weights.Tensors, t => Assert.Equal(written, t.DType));
            using var config = JsonDocument.Parse(await File.ReadAllTextAsync(Path.Combine(output, "config.json")));
            Assert.Equal("bfloat16", config.RootElement.GetProperty("torch_dtype").GetString());
        }

        static float Bf16(float v) => BitConverter.UInt32BitsToSingle((BitConverter.SingleToUInt32Bits(v) + 0x7FFFu + ((BitConverter.SingleToUInt32Bits(v) >> 16) & 1u)) & 0xFFFF0000u);
        var floor = Bf16(1e-6f);
        foreach (var (name, x) in baseValues)
        {
            using var file = Core.SafeTensors.SafeTensorsFile.Open(Path.Combine(_root, "bf16-nearswap", "model.safetensors"));
            var info = file.GetTensor(name);
            var bytes = new byte[info.ByteLength];
            file.ReadBytes(info, bytes);
            var got = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(bytes).ToArray();
            for (var e = 0; e < x.Length; e++)
            {
                var w = Math.Clamp(Bf16(Bf16(1f / MathF.Max(MathF.Abs(Bf16(x[e] - a[name][e])), floor)) * 0.01f), 0f, 1f);
                var expected = Bf16(Bf16(w * a[name][e]) + Bf16(Bf16(1f - w) * x[e]));
                Assert.True((ushort)(BitConverter.SingleToUInt32Bits(expected) >> 16) == got[e], $"{name}[{e}]: expected {expected}");
            }
        }
    }

    /// <summary>
    /// nuslerp, multislerp, karcher and arcee_fusion (which reproduce mergekit's half-precision arithmetic since
    /// 2026-12-05; their bits are tested in the strategies' tests) through the engine on bfloat16 files with
    /// <c>dtype: bfloat16</c>: no "rounds once" warning, tensors written in bfloat16 (arcee_fusion's in float32, as
    /// mergekit's), and the bytes differ from the same merge with <c>--compute-dtype float32</c> (computed in float32 and
    /// rounded once): the engine hands these methods the half-precision compute dtype.
    /// </summary>
    [Fact]
    public async Task Interpolations_give_mergekits_bfloat16_arithmetic_through_the_engine()
    {
        var (baseDir, _, pathA, _, pathB) = BFloat16StandIns("bf16-interpolations");
        var configs = new Dictionary<string, string>
        {
            ["nuslerp"] = $"merge_method: nuslerp\nbase_model: {baseDir}\nmodels:\n  - model: {pathA}\n    parameters: {{weight: 0.35}}\n  - model: {pathB}\n    parameters: {{weight: 0.9}}\nparameters: {{nuslerp_flatten: false}}\ndtype: bfloat16\n",
            ["multislerp"] = $"merge_method: multislerp\nbase_model: {baseDir}\nmodels:\n  - model: {pathA}\n    parameters: {{weight: 0.3}}\n  - model: {pathB}\n    parameters: {{weight: 0.9}}\ndtype: bfloat16\n",
            ["karcher"] = $"merge_method: karcher\nbase_model: {baseDir}\nmodels:\n  - model: {pathA}\n  - model: {pathB}\ndtype: bfloat16\n",
            ["arcee_fusion"] = $"merge_method: arcee_fusion\nbase_model: {baseDir}\nmodels:\n  - model: {baseDir}\n  - model: {pathA}\ndtype: bfloat16\n",
        };
        foreach (var (method, yaml) in configs)
        {
            var config = Config(method + "-bf16.yaml", yaml);
            var output = Path.Combine(_root, "bf16-" + method);
            var (exit, stdout, stderr) = await SensMerge("merge", config, "--out", output);
            Assert.True(exit == 0, $"{method}: {stderr}{stdout}");
            Assert.DoesNotContain("computes in float32 and rounds", stdout + stderr, StringComparison.Ordinal);
            var once = Path.Combine(_root, "bf16-once-" + method);
            (exit, stdout, stderr) = await SensMerge("merge", config, "--out", once, "--compute-dtype", "float32");
            Assert.True(exit == 0, $"{method} --compute-dtype float32: {stderr}{stdout}");
            using var weights = Core.SafeTensors.SafeTensorsFile.Open(Path.Combine(output, "model.safetensors"));
            using var onceWeights = Core.SafeTensors.SafeTensorsFile.Open(Path.Combine(once, "model.safetensors"));
            var written = method == "arcee_fusion" ? Core.SafeTensors.SafeTensorsDType.F32 : Core.SafeTensors.SafeTensorsDType.BF16;
            Assert.All(weights.Tensors, t => Assert.Equal(written, t.DType));
            var differing = 0;
            foreach (var tensor in weights.Tensors)
            {
                var bytes = new byte[tensor.ByteLength];
                weights.ReadBytes(tensor, bytes);
                var other = onceWeights.GetTensor(tensor.Name);
                var onceBytes = new byte[other.ByteLength];
                onceWeights.ReadBytes(other, onceBytes);
                differing += bytes.AsSpan().SequenceEqual(onceBytes) ? 0 : 1;
            }
            Assert.True(differing > 0, $"{method}: every tensor equals the float32 computation rounded once");
        }
    }

    /// <summary>
    /// Three one-layer bfloat16 llama stand-ins under <paramref name="folder"/>: a base and two fine-tunes of it (seeds
    /// 1, 2, 3), with the base's and the first fine-tune's values.
    /// </summary>
    private (string BaseDir, Dictionary<string, float[]> BaseValues, string PathA, Dictionary<string, float[]> A, string PathB) BFloat16StandIns(string folder)
    {
        var parent = Path.Combine(_root, folder);
        var baseDir = Path.Combine(parent, "base");
        var baseValues = TinyModels.WriteStandIn(baseDir, 1, 1, Core.SafeTensors.SafeTensorsDType.BF16, "llama");
        var pathA = Path.Combine(parent, "a");
        var a = TinyModels.WriteStandIn(pathA, 2, 1, Core.SafeTensors.SafeTensorsDType.BF16, "llama", baseValues);
        var pathB = Path.Combine(parent, "b");
        TinyModels.WriteStandIn(pathB, 3, 1, Core.SafeTensors.SafeTensorsDType.BF16, "llama", baseValues);
        return (baseDir, baseValues, pathA, a, pathB);
    }

    [Fact]
    public async Task A_two_slice_passthrough_frankenmerge_equals_the_hand_built_model()
    {
        var parent = Path.Combine(_root, "models");
        var a = TinyModels.WriteStandIn(Path.Combine(parent, "a"), 1, 6, Core.SafeTensors.SafeTensorsDType.F32, "llama");
        var b = TinyModels.WriteStandIn(Path.Combine(parent, "b"), 2, 4, Core.SafeTensors.SafeTensorsDType.F32, "llama");
        // Slice 1: a's layers 0-3 (scale 2 from the top level); slice 2: b's layers 1-3 with its own scale gradient over
        // the slice (t = 0, 0.5, 1 gives 1, 0.75, 0.5), and 0.25 for b's mlp tensors (a per-source filter).
        var config = Config("franken.yaml", $"""
            slices:
              - sources:
                  - model: {Path.Combine(parent, "a")}
                    layer_range: [0, 4]
              - sources:
                  - model: {Path.Combine(parent, "b")}
                    layer_range: [1, 4]
                    parameters:
                      scale:
                        - filter: mlp
                          value: 0.25
                parameters:
                  scale: [1, 0.5]
            merge_method: passthrough
            parameters:
              scale: 2
            """);
        var (exit, stdout, stderr) = await SensMerge("merge", config, "--out", Path.Combine(_root, "franken"));
        Assert.True(exit == 0, stderr + stdout);

        var output = Path.Combine(_root, "franken");
        using var json = JsonDocument.Parse(await File.ReadAllTextAsync(Path.Combine(output, "config.json")));
        Assert.Equal(7, json.RootElement.GetProperty("num_hidden_layers").GetInt32());
        using var file = Core.SafeTensors.SafeTensorsFile.Open(Path.Combine(output, "model.safetensors"));
        var expected = new Dictionary<string, double[]>();
        void Expect(string name, Dictionary<string, float[]> source, string sourceName, double scale) =>
            expected[name] = [.. source[sourceName].Select(v => v * scale)];
        Expect("model.embed_tokens.weight", a, "model.embed_tokens.weight", 2); // first slice
        Expect("model.norm.weight", b, "model.norm.weight", 1); // last slice, outside the blocks: t = 0
        Expect("lm_head.weight", b, "lm_head.weight", 1);
        foreach (var suffix in a.Keys.Where(k => k.StartsWith("model.layers.0.", StringComparison.Ordinal)).Select(k => k["model.layers.0.".Length..]))
        {
            for (var j = 0; j < 4; j++)
            {
                Expect($"model.layers.{j}.{suffix}", a, $"model.layers.{j}.{suffix}", 2);
            }
            for (var j = 0; j < 3; j++)
            {
                Expect($"model.layers.{4 + j}.{suffix}", b, $"model.layers.{1 + j}.{suffix}", suffix.StartsWith("mlp.", StringComparison.Ordinal) ? 0.25 : 1 - (0.25 * j));
            }
        }
        Assert.Equal(expected.Keys.Order(), file.Tensors.Select(t => t.Name).Order());
        foreach (var (name, values) in expected)
        {
            AssertClose(values, ReadF32(output, name), name);
        }
    }

    [Fact]
    public async Task Slices_with_a_base_model_merge_each_slice_around_its_own_base_layers()
    {
        var parent = Path.Combine(_root, "models");
        var b = TinyModels.WriteStandIn(Path.Combine(parent, "base"), 1, 4, Core.SafeTensors.SafeTensorsDType.F32, "llama");
        var x = TinyModels.WriteStandIn(Path.Combine(parent, "x"), 2, 4, Core.SafeTensors.SafeTensorsDType.F32, "llama", b);
        // task_arithmetic per slice: slice 1 (layers 0-1) with weight 0.5, slice 2 (layers 1-2 again, renumbered 2-3)
        // with a weight gradient [1, 0] over its two layers.
        var config = Config("sliced-ta.yaml", $"""
            slices:
              - sources:
                  - model: {Path.Combine(parent, "base")}
                    layer_range: [0, 2]
                  - model: {Path.Combine(parent, "x")}
                    layer_range: [0, 2]
                    parameters:
                      weight: 0.5
              - sources:
                  - model: {Path.Combine(parent, "base")}
                    layer_range: [1, 3]
                  - model: {Path.Combine(parent, "x")}
                    layer_range: [1, 3]
                    parameters:
                      weight: [1, 0]
            merge_method: task_arithmetic
            base_model: {Path.Combine(parent, "base")}
            """);
        var (exit, stdout, stderr) = await SensMerge("merge", config, "--out", Path.Combine(_root, "sliced-ta"));
        Assert.True(exit == 0, stderr + stdout);
        var output = Path.Combine(_root, "sliced-ta");
        double[] Ta(string name, double weight) => [.. b[name].Select((v, i) => v + (weight * (x[name][i] - v)))];
        var expected = new Dictionary<string, double[]>
        {
            ["model.embed_tokens.weight"] = Ta("model.embed_tokens.weight", 0.5),
            ["model.norm.weight"] = Ta("model.norm.weight", 1),
            ["lm_head.weight"] = Ta("lm_head.weight", 1),
        };
        foreach (var suffix in b.Keys.Where(k => k.StartsWith("model.layers.0.", StringComparison.Ordinal)).Select(k => k["model.layers.0.".Length..]))
        {
            expected[$"model.layers.0.{suffix}"] = Ta($"model.layers.0.{suffix}", 0.5);
            expected[$"model.layers.1.{suffix}"] = Ta($"model.layers.1.{suffix}", 0.5);
            expected[$"model.layers.2.{suffix}"] = Ta($"model.layers.1.{suffix}", 1);
            expected[$"model.layers.3.{suffix}"] = Ta($"model.layers.2.{suffix}", 0);
        }
        using var file = Core.SafeTensors.SafeTensorsFile.Open(Path.Combine(output, "model.safetensors"));
        Assert.Equal(expected.Keys.Order(), file.Tensors.Select(t => t.Name).Order());
        foreach (var (name, values) in expected)
        {
            AssertClose(values, ReadF32(output, name), name);
        }

        // A method that needs a base, over a slice that lacks it, is refused before anything is written.
        var missing = Config("sliced-missing.yaml", $"""
            slices:
              - sources:
                  - model: {Path.Combine(parent, "base")}
                    layer_range: [0, 2]
                  - model: {Path.Combine(parent, "x")}
                    layer_range: [0, 2]
              - sources:
                  - model: {Path.Combine(parent, "x")}
                    layer_range: [2, 4]
            merge_method: task_arithmetic
            base_model: {Path.Combine(parent, "base")}
            """);
        (exit, stdout, stderr) = await SensMerge("merge", missing, "--out", Path.Combine(_root, "sliced-missing"));
        Assert.NotEqual(0, exit);
        Assert.Contains("slice 2", stderr, StringComparison.Ordinal);
        Assert.Contains("has no source from base_model", stderr, StringComparison.Ordinal);
        Assert.False(Directory.Exists(Path.Combine(_root, "sliced-missing")));
    }

    private static float[] ReadF32(string folder, string tensor)
    {
        using var file = Core.SafeTensors.SafeTensorsFile.Open(Path.Combine(folder, "model.safetensors"));
        var info = file.GetTensor(tensor);
        var bytes = new byte[info.ByteLength];
        file.ReadBytes(info, bytes);
        return System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(bytes).ToArray();
    }

    private static void AssertClose(double[] expected, float[] actual, string tensor)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (var i = 0; i < expected.Length; i++)
        {
            Assert.True(Math.Abs(expected[i] - actual[i]) <= 1e-5 * Math.Max(1, Math.Abs(expected[i])), $"{tensor}[{i}]: expected {expected[i]}, got {actual[i]}");
        }
    }

    [Fact]
    public async Task Hub_references_are_pulled_pinned_and_recorded_with_the_servers_commits()
    {
        var repos = Path.Combine(_root, "repos");
        MakeModels(Path.Combine(repos, "acme"));
        await using var server = await HubServer.StartAsync(new FolderRepositorySource(repos));
        var config = Config("hub.yaml", """
            merge_method: task_arithmetic
            base_model: acme/base
            models:
              - model: acme/expert-a@main
              - model: acme/expert-b
            parameters:
              lambda: 0.5
            """);
        var env = new Dictionary<string, string>
        {
            ["HF_ENDPOINT"] = server.Endpoint,
            ["HF_HUB_CACHE"] = Path.Combine(_root, "hf-cache"),
            ["HF_HUB_OFFLINE"] = "0",
        };

        var (exit, stdout, stderr) = await Processes.RunAsync("dotnet",
            [TestPaths.HostDll, "merge", config, "--out", Path.Combine(_root, "hub-out"), "--plugins", _plugins, "--registry", _registry], environment: env);

        Assert.True(exit == 0, stderr + stdout);
        var id = stdout.Split("registry id ")[1].Trim();
        using var http = new HttpClient();
        using var registry = LiteDbMergeRegistry.Open(new RegistryOptions { Path = _registry });
        var record = await registry.GetAsync(id) ?? throw new InvalidOperationException("no record");
        foreach (var input in record.Inputs)
        {
            var repo = input.Reference.Split('@')[0];
            var info = JsonDocument.Parse(await http.GetStringAsync($"{server.Endpoint}/api/models/{repo}"));
            Assert.Equal(info.RootElement.GetProperty("sha").GetString(), input.ResolvedCommit);
            Assert.StartsWith(Path.Combine(_root, "hf-cache"), input.LocalPath, StringComparison.Ordinal);
            Assert.Equal(Sha256(Path.Combine(repos, repo, "model.safetensors")), input.Files.Single(f => f.Path == "model.safetensors").Sha256);
            // The snapshot's files are symbolic links into blobs/: the record has the sizes and hashes of the bytes merged.
            Assert.True(File.ResolveLinkTarget(Path.Combine(input.LocalPath!, "model.safetensors"), returnFinalTarget: false) is not null, "the cache links snapshot files to blobs");
            foreach (var file in input.Files)
            {
                var served = Path.Combine(repos, repo, file.Path);
                Assert.Equal((Sha256(served), new FileInfo(served).Length), (file.Sha256, file.Size));
            }
        }
        Assert.Equal("main", record.Inputs.Single(i => i.Reference == "acme/expert-a@main").RequestedRevision);
    }

    [Fact]
    public async Task Unknown_method_and_out_of_range_parameter_fail_before_any_output()
    {
        var (baseDir, a, _) = MakeModels(Path.Combine(_root, "models"));
        var unknown = Config("unknown.yaml", $"merge_method: tiez\nbase_model: {baseDir}\nmodels:\n  - model: {a}\n");
        var (exit, _, stderr) = await SensMerge("merge", unknown, "--out", Path.Combine(_root, "never"));
        Assert.Equal(1, exit);
        Assert.Contains("'tiez'", stderr, StringComparison.Ordinal);
        Assert.Contains("ties", stderr, StringComparison.Ordinal);

        var range = Config("range.yaml", $"merge_method: ties\nbase_model: {baseDir}\nmodels:\n  - model: {a}\n    parameters: {{density: 1.5}}\n");
        (exit, _, stderr) = await SensMerge("merge", range, "--out", Path.Combine(_root, "never"));
        Assert.Equal(1, exit);
        Assert.Contains("density", stderr, StringComparison.Ordinal);
        Assert.False(Directory.Exists(Path.Combine(_root, "never")));
        Assert.Empty(Directory.GetDirectories(_root, "never*"));
    }

    [Fact]
    public async Task A_merge_killed_halfway_leaves_a_failed_record_and_no_output()
    {
        // Large enough that the merge runs for a while after the registry shows it running: 9 tensors of ~0.25-4M floats
        // each, 76 MB a model (with 19 MB the merge sometimes committed its output between the registry check and the kill).
        var (baseDir, a, b) = MakeModels(Path.Combine(_root, "models"), scaleShape: [8192]);
        var config = Config("slow.yaml", $"merge_method: ties\nbase_model: {baseDir}\nmodels:\n  - model: {a}\n    parameters: {{density: 0.3}}\n  - model: {b}\n    parameters: {{density: 0.3}}\n");
        var output = Path.Combine(_root, "killed");
        var start = new System.Diagnostics.ProcessStartInfo("dotnet") { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var arg in new[] { TestPaths.HostDll, "merge", config, "--out", output, "--plugins", _plugins, "--registry", _registry })
        {
            start.ArgumentList.Add(arg);
        }
        using var process = System.Diagnostics.Process.Start(start)!;
        using var registry = LiteDbMergeRegistry.Open(new RegistryOptions { Path = _registry, MarkAbandoned = false });
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while ((await registry.ListAsync(MergeQuery.All)).All(m => m.Status != MergeStatus.Running) && DateTime.UtcNow < deadline && !process.HasExited)
        {
            await Task.Delay(20);
        }
        Assert.False(process.HasExited, "the merge finished before it could be killed: make the test model larger");
        process.Kill(entireProcessTree: true);
        await process.WaitForExitAsync();

        var abandoned = await registry.MarkAbandonedAsync();
        var record = Assert.Single(await registry.ListAsync(MergeQuery.All));
        Assert.Contains(record.Id, abandoned);
        Assert.Equal(MergeStatus.Failed, record.Status);
        Assert.False(File.Exists(Path.Combine(output, "model.safetensors")));
        Assert.False(Directory.Exists(output));
    }

    [Fact]
    public async Task Repository_plugins_json_loads_every_shipped_plugin()
    {
        var (exit, stdout, stderr) = await Processes.SensMergeAsync("plugins", "list", "--json", "--plugins", _plugins);
        Assert.True(exit == 0, stderr);
        var plugins = JsonDocument.Parse(stdout).RootElement.GetProperty("plugins").EnumerateArray().ToList();
        Assert.All(plugins, p => Assert.True(p.GetProperty("status").GetString() == "Loaded", $"{p.GetProperty("id")}: {p}"));
        var names = plugins.SelectMany(p => p.GetProperty("components").EnumerateArray()).Select(c => c.GetProperty("name").GetString()).ToHashSet();
        foreach (var expected in new[] { "linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "breadcrumbs", "breadcrumbs_ties", "della", "della_linear", "slerp", "model_stock", "nearswap", "multislerp", "karcher", "nuslerp", "arcee_fusion", "sce", "passthrough", "sens", "sensitivity", "logit_alignment", "fisher" })
        {
            Assert.Contains(expected, names);
        }
    }
}
