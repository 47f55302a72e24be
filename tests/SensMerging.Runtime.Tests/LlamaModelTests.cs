using System.Text.Json.Nodes;
using SensMerging.Abstractions;
using SensMerging.Runtime.Model;
using SensMerging.Runtime.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Runtime.Tests;

public sealed class LlamaModelTests : IDisposable
{
    private static readonly long[] Sequence = [1, 5, 9, 4, 30, 31, 7, 12, 5, 20];
    private readonly TempFolder _temp = new();

    public void Dispose() => _temp.Dispose();

    [Theory]
    [InlineData(false, null, false)]
    [InlineData(true, null, false)]
    [InlineData(false, 3, false)]
    [InlineData(true, null, true)]
    public void Logits_match_independent_reference(bool tied, int? window, bool bias)
    {
        var tiny = new TinyModel(TinyModel.SmallConfig(tied, window, window is null ? "llama" : "mistral", bias), seed: 7);
        var dir = _temp.Sub("m");
        tiny.Write(dir);
        using var model = new LlamaRuntime().LoadLlama(dir, new ModelLoadOptions(), CancellationToken.None);
        using var ids = tensor(Sequence, [1, Sequence.Length], ScalarType.Int64);
        using var logits = model.Forward(ids);
        Assert.Equal(new long[] { 1, Sequence.Length, 32 }, logits.shape);
        var actual = logits.data<float>().ToArray();
        var expected = ReferenceLlama.Logits(tiny, Sequence);
        var maxAbs = expected.SelectMany(r => r).Max(Math.Abs);
        Assert.True(maxAbs > 0.5, $"reference logits too small to be a meaningful check ({maxAbs})");
        for (var t = 0; t < Sequence.Length; t++)
        {
            for (var v = 0; v < 32; v++)
            {
                Assert.True(Math.Abs(actual[(t * 32) + v] - expected[t][v]) < 1e-4 * Math.Max(1, maxAbs),
                    $"t={t} v={v}: runtime {actual[(t * 32) + v]} vs reference {expected[t][v]}");
            }
        }
    }

    [Fact]
    public void Batched_forward_matches_single_rows()
    {
        var tiny = new TinyModel(TinyModel.SmallConfig(), seed: 3);
        var dir = _temp.Sub("m");
        tiny.Write(dir);
        using var model = LlamaModel.Load(dir, new ModelLoadOptions(), CancellationToken.None);
        var second = Sequence.Reverse().ToArray();
        using var batch = tensor(Sequence.Concat(second).ToArray(), [2, Sequence.Length], ScalarType.Int64);
        using var both = model.Forward(batch);
        using var one = model.Forward(tensor(second, [1, second.Length], ScalarType.Int64));
        Assert.True(both[1].allclose(one[0], rtol: 1e-5, atol: 1e-5));
    }

    [Fact]
    public void Loss_gradients_match_central_finite_differences()
    {
        var tiny = new TinyModel(TinyModel.SmallConfig(tied: true), seed: 11);
        var dir = _temp.Sub("m");
        tiny.Write(dir);
        using var model = LlamaModel.Load(dir, new ModelLoadOptions(Dtype: ScalarType.Float64, RequiresGrad: true), CancellationToken.None);
        var sample = new TokenizedSample(Sequence, Sequence.Select((_, i) => i >= 3 && i < Sequence.Length - 1).ToArray());

        model.ZeroGradients();
        using (var loss = model.Loss(sample))
        {
            loss.backward();
        }
        var checks = new (string Name, long Index)[]
        {
            ("model.embed_tokens.weight", 5 * 16 + 3),
            ("model.layers.0.self_attn.q_proj.weight", 17),
            ("model.layers.0.self_attn.k_proj.weight", 40),
            ("model.layers.1.self_attn.v_proj.weight", 7),
            ("model.layers.1.self_attn.o_proj.weight", 100),
            ("model.layers.0.mlp.gate_proj.weight", 33),
            ("model.layers.1.mlp.down_proj.weight", 200),
            ("model.layers.0.input_layernorm.weight", 4),
            ("model.norm.weight", 9),
        };
        var weights = model.NamedWeights.ToDictionary(w => w.Name, w => w.Weight);
        foreach (var (name, index) in checks)
        {
            var weight = weights[name];
            double analytic;
            using (var grad = weight.grad!)
            {
                analytic = grad.flatten()[index].item<double>();
            }
            const double step = 1e-5;
            var plus = LossWith(model, sample, weight, index, step);
            var minus = LossWith(model, sample, weight, index, -step);
            var numeric = (plus - minus) / (2 * step);
            Assert.True(Math.Abs(analytic - numeric) <= 1e-6 + (1e-5 * Math.Abs(numeric)),
                $"{name}[{index}]: autograd {analytic} vs finite difference {numeric}");
        }
        model.ZeroGradients();
        using var cleared = weights["model.norm.weight"].grad!;
        Assert.Equal(0.0, cleared.abs().sum().item<double>());
    }

    [Fact]
    public void Loss_is_mean_cross_entropy_over_masked_positions()
    {
        var tiny = new TinyModel(TinyModel.SmallConfig(), seed: 5);
        var dir = _temp.Sub("m");
        tiny.Write(dir);
        using var model = LlamaModel.Load(dir, new ModelLoadOptions(), CancellationToken.None);
        var mask = Sequence.Select((_, i) => i is 2 or 6).ToArray();
        using var loss = model.Loss(new TokenizedSample(Sequence, mask));
        var logits = ReferenceLlama.Logits(tiny, Sequence);
        double Nll(int t)
        {
            var row = logits[t];
            var max = row.Max();
            var logSum = max + Math.Log(row.Sum(v => Math.Exp(v - max)));
            return logSum - row[Sequence[t + 1]];
        }
        Assert.Equal((Nll(2) + Nll(6)) / 2, loss.item<float>(), 4);
        Assert.Throws<ArgumentException>(() => model.Loss(new TokenizedSample(Sequence, new bool[Sequence.Length])));
    }

    [Fact]
    public void Sharded_weights_load_like_a_single_file()
    {
        var tiny = new TinyModel(TinyModel.SmallConfig(), seed: 9);
        var single = _temp.Sub("single");
        var sharded = _temp.Sub("sharded");
        tiny.Write(single);
        tiny.Write(sharded, shards: 3);
        Assert.False(File.Exists(Path.Combine(sharded, "model.safetensors")));
        using var a = LlamaModel.Load(single, new ModelLoadOptions(), CancellationToken.None);
        using var b = LlamaModel.Load(sharded, new ModelLoadOptions(), CancellationToken.None);
        using var ids = tensor(Sequence, [1, Sequence.Length], ScalarType.Int64);
        using var la = a.Forward(ids);
        using var lb = b.Forward(ids);
        Assert.True(la.allclose(lb, rtol: 0, atol: 0));
        Assert.Equal(a.NamedWeights.Select(w => w.Name), b.NamedWeights.Select(w => w.Name));
    }

    [Fact]
    public void Named_weights_use_hugging_face_names_and_tied_weight_appears_once()
    {
        var tiny = new TinyModel(TinyModel.SmallConfig(tied: true), seed: 1);
        var dir = _temp.Sub("m");
        tiny.Write(dir);
        using var model = LlamaModel.Load(dir, new ModelLoadOptions(), CancellationToken.None);
        var names = model.NamedWeights.Select(w => w.Name).ToList();
        Assert.Equal(tiny.Weights.Keys.Order(StringComparer.Ordinal), names.Order(StringComparer.Ordinal));
        Assert.Equal("model.embed_tokens.weight", names[0]);
        Assert.Equal("model.norm.weight", names[^1]);
        Assert.DoesNotContain("lm_head.weight", names);
        Assert.Equal(2, model.LayerCount);
        Assert.Equal(32, model.VocabularySize);
    }

    [Fact]
    public void Random_model_is_deterministic_and_saves_a_loadable_folder()
    {
        TestTorch.UseOneThread();
        var config = TinyModel.SmallConfig() with { VocabSize = 100 };
        var tokenizer = WordLevelTokenizer.CreateCharacterLevel();
        using var first = LlamaModel.CreateRandom(config, tokenizer, seed: 42);
        using var second = LlamaModel.CreateRandom(config, tokenizer, seed: 42);
        using var other = LlamaModel.CreateRandom(config, tokenizer, seed: 43);
        var w1 = first.NamedWeights.First(w => w.Name.EndsWith("q_proj.weight", StringComparison.Ordinal)).Weight;
        var w2 = second.NamedWeights.First(w => w.Name.EndsWith("q_proj.weight", StringComparison.Ordinal)).Weight;
        var w3 = other.NamedWeights.First(w => w.Name.EndsWith("q_proj.weight", StringComparison.Ordinal)).Weight;
        Assert.True(w1.allclose(w2, rtol: 0, atol: 0));
        Assert.False(w1.allclose(w3, rtol: 0, atol: 0));
        Assert.InRange(w1.std().item<float>(), 0.015f, 0.025f);
        Assert.True(first.NamedWeights.First(w => w.Name == "model.norm.weight").Weight.eq(1).all().item<bool>());

        var dir = _temp.Sub("saved");
        first.Save(dir);
        foreach (var file in new[] { "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json" })
        {
            Assert.True(File.Exists(Path.Combine(dir, file)), file);
        }
        using var loaded = LlamaModel.Load(dir, new ModelLoadOptions(), CancellationToken.None);
        var ids = loaded.Tokenizer.Encode(new TextSample("1+2=", "3"), 32);
        using var input = tensor(ids.Ids, [1, ids.Length], ScalarType.Int64);
        using var a = first.Forward(input);
        using var b = loaded.Forward(input);
        Assert.True(a.allclose(b, rtol: 0, atol: 0));
        Assert.Equal(first.Config with { BosTokenId = 1, EosTokenId = 2, PadTokenId = 0 }, loaded.Config);
    }

    [Fact]
    public void Low_rank_adapters_fold_into_the_weights_they_adapt()
    {
        TestTorch.UseOneThread();
        var config = TinyModel.SmallConfig() with { VocabSize = 100 };
        var tokenizer = WordLevelTokenizer.CreateCharacterLevel();
        using var model = LlamaModel.CreateRandom(config, tokenizer, seed: 3, new ModelLoadOptions(RequiresGrad: true));
        var before = model.NamedWeights.ToDictionary(w => w.Name, w => w.Weight.detach().clone(), StringComparer.Ordinal);
        var ids = tokenizer.Encode(new TextSample("12+3=", "15"), 32);
        using var input = tensor(ids.Ids, [1, ids.Length], ScalarType.Int64);
        using var plain = model.Forward(input);

        var adapters = model.AttachLowRankAdapters(rank: 2, alpha: 4, seed: 7, name => name.Contains(".mlp.", StringComparison.Ordinal) || name.Contains("q_proj", StringComparison.Ordinal));
        // q_proj, gate_proj, up_proj, down_proj in each of the layers; A and B per map.
        Assert.Equal(config.NumHiddenLayers * 4 * 2, adapters.Count);
        using (var zeroUpdate = model.Forward(input))
        {
            Assert.True(zeroUpdate.allclose(plain, rtol: 0, atol: 0), "B starts at zero: the adapted model starts as the model");
        }
        using (no_grad())
        {
            using var generator = new Generator(11, new Device(DeviceType.CPU));
            foreach (var p in adapters)
            {
                using var noise = normal(0.0, 0.05, p.shape, ScalarType.Float32, generator: generator);
                p.add_(noise);
            }
        }
        using var adapted = model.Forward(input);
        Assert.False(adapted.allclose(plain, rtol: 0, atol: 1e-4f), "the adapters change the output");

        model.MergeLowRankAdapters();
        using var merged = model.Forward(input);
        Assert.True(merged.allclose(adapted, rtol: 1e-4, atol: 1e-5), "W + alpha/r B A computes what the adapter path computed");
        foreach (var (name, weight) in model.NamedWeights)
        {
            using var delta = (weight.detach() - before[name]).to(ScalarType.Float64);
            var adaptedMap = name.Contains(".mlp.", StringComparison.Ordinal) || name.Contains("q_proj", StringComparison.Ordinal);
            if (!adaptedMap)
            {
                Assert.True(delta.abs().max().item<double>() == 0, $"{name} has no adapter and must not change");
                continue;
            }
            // Rank 2 up to float32 rounding of W + delta: two singular values, the rest at rounding level.
            using var singular = linalg.svdvals(delta);
            var values = singular.data<double>().ToArray();
            Assert.True(values[1] > 1e-3 * values[0], $"{name}: second singular value {values[1]} of {values[0]}");
            Assert.True(values[2] < 1e-4 * values[0], $"{name}: third singular value {values[2]} of {values[0]}");
        }
        using var again = model.Forward(input);
        Assert.True(again.allclose(merged, rtol: 0, atol: 0), "merging removed the adapters (no double counting)");
        foreach (var tensor in before.Values)
        {
            tensor.Dispose();
        }
    }

    [Fact]
    public void Training_steps_reduce_the_loss()
    {
        TestTorch.UseOneThread();
        var config = TinyModel.SmallConfig() with { VocabSize = 100 };
        var tokenizer = WordLevelTokenizer.CreateCharacterLevel();
        using var model = LlamaModel.CreateRandom(config, tokenizer, seed: 1);
        var batch = new[] { "2+3=5", "4+4=8", "1+6=7" }.Select(t => tokenizer.Encode(new TextSample(t[..4], t[4..]), 16)).ToList();
        using var optimizer = optim.Adam(model.Parameters, lr: 0.01);
        float first = 0, last = 0;
        for (var step = 0; step < 30; step++)
        {
            optimizer.zero_grad();
            using var loss = model.LossBatch(batch);
            loss.backward();
            optimizer.step();
            last = loss.item<float>();
            if (step == 0)
            {
                first = last;
            }
        }
        Assert.True(last < first * 0.5, $"loss {first} -> {last}");
        var prompt = tokenizer.Encode(new TextSample("2+3="), 16).Ids;
        Assert.NotNull(model.GenerateGreedy(prompt, 3, CancellationToken.None));
    }

    [Fact]
    public void Unsupported_model_type_is_named_in_the_error()
    {
        var dir = _temp.Sub("gpt");
        var config = JsonNode.Parse(TinyModel.SmallConfig().ToJson())!.AsObject();
        config["model_type"] = "gpt2";
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        var error = Assert.Throws<InvalidDataException>(() => LlamaModel.Load(dir, new ModelLoadOptions(), CancellationToken.None));
        Assert.Contains("'gpt2'", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Missing_or_misshaped_weights_are_reported()
    {
        var tiny = new TinyModel(TinyModel.SmallConfig(), seed: 2);
        tiny.Weights.Remove("model.layers.1.mlp.up_proj.weight");
        var dir = _temp.Sub("m");
        tiny.Write(dir);
        var missing = Assert.Throws<InvalidDataException>(() => LlamaModel.Load(dir, new ModelLoadOptions(), CancellationToken.None));
        Assert.Contains("model.layers.1.mlp.up_proj.weight", missing.Message, StringComparison.Ordinal);

        var wrong = new TinyModel(TinyModel.SmallConfig(), seed: 2);
        wrong.Shapes["model.norm.weight"] = [4, 4];
        var dir2 = _temp.Sub("m2");
        wrong.Write(dir2);
        var shape = Assert.Throws<InvalidDataException>(() => LlamaModel.Load(dir2, new ModelLoadOptions(), CancellationToken.None));
        Assert.Contains("model.norm.weight", shape.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Missing_shard_or_weights_are_reported_by_name()
    {
        var tiny = new TinyModel(TinyModel.SmallConfig(), seed: 4);
        var sharded = _temp.Sub("sharded");
        tiny.Write(sharded, shards: 3);
        File.Delete(Path.Combine(sharded, "model-00002-of-00003.safetensors"));
        var shard = Assert.Throws<InvalidDataException>(() => LlamaModel.Load(sharded, new ModelLoadOptions(), CancellationToken.None));
        Assert.Contains("model-00002-of-00003.safetensors", shard.Message, StringComparison.Ordinal);

        var empty = _temp.Sub("empty");
        tiny.Write(empty);
        File.Delete(Path.Combine(empty, "model.safetensors"));
        var none = Assert.Throws<FileNotFoundException>(() => LlamaModel.Load(empty, new ModelLoadOptions(), CancellationToken.None));
        Assert.Contains("model.safetensors", none.Message, StringComparison.Ordinal);
    }

    private static double LossWith(LlamaModel model, TokenizedSample sample, Tensor weight, long index, double delta)
    {
        using (no_grad())
        {
            using var flat = weight.view(-1);
            using var cell = flat[index];
            cell.add_(delta);
        }
        double value;
        using (no_grad())
        using (var loss = model.Loss(sample))
        {
            value = loss.item<double>();
        }
        using (no_grad())
        {
            using var flat = weight.view(-1);
            using var cell = flat[index];
            cell.sub_(delta);
        }
        return value;
    }
}
