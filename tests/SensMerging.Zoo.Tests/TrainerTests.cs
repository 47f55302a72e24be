using SensMerging.Abstractions;
using SensMerging.Runtime.Model;
using SensMerging.Runtime.Tokenization;
using SensMerging.Zoo.Training;
using static TorchSharp.torch;

namespace SensMerging.Zoo.Tests;

public sealed class TrainerTests
{
    private static readonly LlamaConfig Config = new() { HiddenSize = 32, IntermediateSize = 48, NumHiddenLayers = 1, NumAttentionHeads = 4, NumKeyValueHeads = 2, VocabSize = 100 };

    private static readonly TrainingSettings Settings = new(Steps: 40, BatchSize: 8, LearningRate: 5e-3, WarmupSteps: 4);

    private static readonly IReadOnlyList<TextSample> Digits = [.. Enumerable.Range(0, 12).Select(i => new TextSample($"d{i}? ", $"{i % 3}{i % 3}{i % 3}"))];

    private static readonly IReadOnlyList<TextSample> Letters = [.. Enumerable.Range(0, 12).Select(i => new TextSample($"l{i}? ", new string((char)('x' + (i % 3)), 3)))];

    [Fact]
    public void Pool_weights_decide_what_the_model_learns()
    {
        var onDigits = TrainAndMeasure([1.0, 0.0]);
        var onLetters = TrainAndMeasure([0.0, 1.0]);
        // Trained only on digits: better on digits than the letters-only model, and the other way round.
        Assert.True(onDigits.Digits < onLetters.Digits, $"digits loss {onDigits.Digits} vs {onLetters.Digits}");
        Assert.True(onLetters.Letters < onDigits.Letters, $"letters loss {onLetters.Letters} vs {onDigits.Letters}");
    }

    [Fact]
    public void Invalid_pool_weights_are_rejected_with_a_clear_message()
    {
        var tokenizer = WordLevelTokenizer.CreateCharacterLevel();
        using var model = LlamaModel.CreateRandom(Config, tokenizer, seed: 1, new ModelLoadOptions(RequiresGrad: true));
        var trainer = new ZooTrainer();
        foreach (var weights in new double[][] { [1.0], [-1.0, 1.0], [0.0, 0.0], [double.NaN, 1.0] })
        {
            var error = Assert.Throws<ArgumentException>(() =>
                trainer.Train(model, [Digits, Letters], Settings, 16, 1, "m", null, CancellationToken.None, weights));
            Assert.Contains("pool weights", error.Message, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void Frozen_tensors_keep_their_values_and_every_other_tensor_trains()
    {
        var tokenizer = WordLevelTokenizer.CreateCharacterLevel();
        using var model = LlamaModel.CreateRandom(Config, tokenizer, seed: 2, new ModelLoadOptions(RequiresGrad: true));
        var before = model.NamedWeights.ToDictionary(w => w.Name, w => w.Weight.data<float>().ToArray(), StringComparer.Ordinal);
        var frozen = Settings with { Steps = 5, FrozenTensors = ["lm_head.weight", "model.embed_tokens.weight"] };
        new ZooTrainer().Train(model, [Digits], frozen, 16, 1, "m", null, CancellationToken.None);
        foreach (var (name, weight) in model.NamedWeights)
        {
            var same = before[name].SequenceEqual(weight.data<float>().ToArray());
            Assert.True(same == !frozen.Trains(name), $"{name}: unchanged = {same}");
        }
        Assert.False(frozen.Trains("lm_head.weight"));
        Assert.True(frozen.Trains("model.layers.0.mlp.up_proj.weight"));

        var all = Settings with { FrozenTensors = [.. model.NamedWeights.Select(w => w.Name)] };
        var error = Assert.Throws<ArgumentException>(() => new ZooTrainer().Train(model, [Digits], all, 16, 1, "m", null, CancellationToken.None));
        Assert.Contains("frozen", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Lora_fine_tunes_change_only_adapted_maps_by_low_rank_updates()
    {
        var tokenizer = WordLevelTokenizer.CreateCharacterLevel();
        using var model = LlamaModel.CreateRandom(Config, tokenizer, seed: 4, new ModelLoadOptions(RequiresGrad: true));
        var before = model.NamedWeights.ToDictionary(w => w.Name, w => w.Weight.detach().clone(), StringComparer.Ordinal);
        var lora = Settings with { Steps = 30, LowRank = 2, LowRankAlpha = 4, FrozenTensors = ["lm_head"] };
        var report = new ZooTrainer().Train(model, [Digits], lora, 16, 1, "m", null, CancellationToken.None);
        Assert.True(report.FinalLoss < report.InitialLoss, $"loss {report.InitialLoss} -> {report.FinalLoss}");
        foreach (var (name, weight) in model.NamedWeights)
        {
            using var delta = (weight.detach() - before[name]).to(ScalarType.Float64);
            var isBlockLinear = name.Contains("_proj.weight", StringComparison.Ordinal);
            if (!isBlockLinear)
            {
                // Embeddings, norms and the frozen lm_head: LoRA trains only the adapters of trained linear maps.
                Assert.True(delta.abs().max().item<double>() == 0, $"{name} changed");
                continue;
            }
            // Rank 2 up to float32 rounding of W + delta: two singular values, the rest at rounding level.
            using var singular = linalg.svdvals(delta);
            var values = singular.data<double>().ToArray();
            Assert.True(values[1] > 1e-3 * values[0], $"{name}: second singular value {values[1]} of {values[0]}");
            Assert.True(values[2] < 1e-4 * values[0], $"{name}: third singular value {values[2]} of {values[0]}");
        }
        var error = Assert.Throws<ArgumentException>(() => (Settings with { LowRank = -1 }).Validate());
        Assert.Contains("LoRA rank", error.Message, StringComparison.Ordinal);
        foreach (var tensor in before.Values)
        {
            tensor.Dispose();
        }
    }

    [Fact]
    public void Anchor_decay_pulls_toward_the_starting_weights_and_zero_is_the_adamw_path_bit_for_bit()
    {
        var start = TrainedWeights(null);
        var adamw = TrainedWeights(Settings);
        // 0 is the default: AdamW with its decay toward zero, bit for bit.
        Assert.Equal(0, Settings.AnchorDecay);
        AssertSameBits(adamw, TrainedWeights(Settings with { AnchorDecay = 0 }));
        // A huge anchor (the pull is capped at the whole distance) leaves every weight exactly where it started.
        AssertSameBits(start, TrainedWeights(Settings with { AnchorDecay = 1e12 }));
        // A moderate one trains (the weights move) but ends nearer the start than the free run.
        var anchored = TrainedWeights(Settings with { AnchorDecay = 40 });
        var free = Distance(adamw, start);
        var pulled = Distance(anchored, start);
        Assert.True(pulled > 0 && pulled < 0.8 * free, $"distance to the start: anchored {pulled}, AdamW {free}");
    }

    [Fact]
    public void Anchor_decay_is_the_step_then_a_pull_of_lr_times_anchor_toward_the_start()
    {
        // One step without any decay, then the same step with the anchor: theta1' = theta1 - lr * a * (theta1 - theta0).
        var oneStep = Settings with { Steps = 1, WarmupSteps = 0, WeightDecay = 0 };
        const double anchor = 30;
        var pull = oneStep.AnchorPullAt(0);
        Assert.Equal(0, pull);
        Assert.Equal(oneStep.LearningRate * anchor, (oneStep with { AnchorDecay = anchor }).AnchorPullAt(0), 12);
        Assert.Equal(1.0, (oneStep with { AnchorDecay = 1e9 }).AnchorPullAt(0));
        var start = TrainedWeights(null);
        var stepped = TrainedWeights(oneStep);
        var anchored = TrainedWeights(oneStep with { AnchorDecay = anchor, WeightDecay = 0.5 }); // AdamW's own decay is off
        var factor = oneStep.LearningRate * anchor;
        foreach (var (name, values) in anchored)
        {
            var expected = stepped[name].Zip(start[name], (theta, theta0) => theta - (factor * (theta - theta0))).ToArray();
            for (var i = 0; i < values.Length; i++)
            {
                Assert.True(Math.Abs(values[i] - expected[i]) <= 1e-6 + (1e-5 * Math.Abs(expected[i])), $"{name}[{i}]: {values[i]} vs {expected[i]}");
            }
        }
        Assert.Contains("anchor decay", Assert.Throws<ArgumentException>(() => (Settings with { AnchorDecay = -1 }).Validate()).Message, StringComparison.Ordinal);
        Assert.Contains("anchor decay", Assert.Throws<ArgumentException>(() => (Settings with { AnchorDecay = double.NaN }).Validate()).Message, StringComparison.Ordinal);
    }

    /// <summary>The weights of a fresh model (seed 5) after training with <paramref name="settings"/>, or untrained when null.</summary>
    private static Dictionary<string, float[]> TrainedWeights(TrainingSettings? settings)
    {
        var tokenizer = WordLevelTokenizer.CreateCharacterLevel();
        using var model = LlamaModel.CreateRandom(Config, tokenizer, seed: 5, new ModelLoadOptions(RequiresGrad: true));
        if (settings is not null)
        {
            new ZooTrainer().Train(model, [Digits, Letters], settings, 16, 1, "m", null, CancellationToken.None);
        }
        return model.NamedWeights.ToDictionary(w => w.Name, w => w.Weight.data<float>().ToArray(), StringComparer.Ordinal);
    }

    private static void AssertSameBits(Dictionary<string, float[]> expected, Dictionary<string, float[]> actual)
    {
        Assert.Equal(expected.Keys, actual.Keys);
        foreach (var (name, values) in expected)
        {
            Assert.True(values.SequenceEqual(actual[name]), $"{name} differs");
        }
    }

    private static double Distance(Dictionary<string, float[]> a, Dictionary<string, float[]> b) =>
        Math.Sqrt(a.Sum(p => p.Value.Zip(b[p.Key], (x, y) => (double)(x - y) * (x - y)).Sum()));

    private static (double Digits, double Letters) TrainAndMeasure(double[] weights)
    {
        var tokenizer = WordLevelTokenizer.CreateCharacterLevel();
        using var model = LlamaModel.CreateRandom(Config, tokenizer, seed: 1, new ModelLoadOptions(RequiresGrad: true));
        new ZooTrainer().Train(model, [Digits, Letters], Settings, 16, 1, "m", null, CancellationToken.None, weights);
        using var noGrad = no_grad();
        double Loss(IReadOnlyList<TextSample> samples)
        {
            using var scope = NewDisposeScope();
            return model.LossBatch([.. samples.Select(s => tokenizer.Encode(s, 16))]).item<float>();
        }
        return (Loss(Digits), Loss(Letters));
    }
}
