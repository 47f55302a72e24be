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
