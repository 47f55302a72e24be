using SensMerging.Abstractions;
using SensMerging.Runtime.Model;
using SensMerging.Runtime.Tokenization;
using SensMerging.Zoo.Training;
using static TorchSharp.torch;

namespace SensMerging.Zoo.Tests;

public sealed class DistillationTests
{
    private static readonly LlamaConfig Config = new() { HiddenSize = 32, IntermediateSize = 48, NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = 2, VocabSize = 100 };

    private static readonly TrainingSettings Settings = new(Steps: 40, BatchSize: 8, LearningRate: 5e-3, WarmupSteps: 4);

    private static readonly IReadOnlyList<TextSample> Digits = [.. Enumerable.Range(0, 12).Select(i => new TextSample($"d{i}? ", $"{i % 3}{i % 3}{i % 3}"))];

    private static readonly IReadOnlyList<TextSample> Letters = [.. Enumerable.Range(0, 12).Select(i => new TextSample($"letter {i}? ", new string((char)('x' + (i % 3)), 2 + (i % 4))))];

    [Fact]
    public void Kl_to_the_teacher_matches_a_double_precision_sum_over_each_sample_scored_alone()
    {
        // Independent path: each sample run alone through the full forward (no padding, no position selection), the
        // log-softmax and the KL summed in double precision by hand at the positions whose loss mask is set.
        var tokenizer = WordLevelTokenizer.CreateCharacterLevel();
        using var student = LlamaModel.CreateRandom(Config, tokenizer, seed: 11, new ModelLoadOptions(RequiresGrad: true));
        using var teacher = LlamaModel.CreateRandom(Config, tokenizer, seed: 12, new ModelLoadOptions(RequiresGrad: false));
        var batch = Letters.Take(5).Concat(Digits.Take(2)).Select(s => tokenizer.Encode(s, 24)).ToArray();
        Assert.True(batch.Select(s => s.Length).Distinct().Count() > 1, "samples of different lengths exercise the padding");

        double klSum = 0;
        var positions = 0;
        foreach (var sample in batch)
        {
            var studentLogits = LogitsAlone(student, sample);
            var teacherLogits = LogitsAlone(teacher, sample);
            for (var t = 0; t + 1 < sample.Length; t++)
            {
                if (!sample.LossMask[t])
                {
                    continue;
                }
                var logQ = LogSoftmax(studentLogits[t]);
                var logP = LogSoftmax(teacherLogits[t]);
                klSum += logP.Zip(logQ, (p, q) => Math.Exp(p) * (p - q)).Sum();
                positions++;
            }
        }
        var expected = klSum / positions;
        Assert.True(expected > 1e-3, $"two random models should disagree: {expected}");

        using var kl = OffTaskDistillation.KlToTeacher(student, teacher, batch);
        var actual = kl.item<float>();
        Assert.True(Math.Abs(actual - expected) <= 1e-5 * Math.Max(1, expected), $"KL {actual} vs independent {expected}");
        Assert.True(kl.requires_grad, "the student's side carries the autograd graph");
    }

    [Fact]
    public void Kl_of_a_model_to_its_own_copy_is_zero_with_a_vanishing_gradient()
    {
        var tokenizer = WordLevelTokenizer.CreateCharacterLevel();
        using var student = LlamaModel.CreateRandom(Config, tokenizer, seed: 21, new ModelLoadOptions(RequiresGrad: true));
        using var teacher = LlamaModel.CreateRandom(Config, tokenizer, seed: 21, new ModelLoadOptions(RequiresGrad: false));
        var batch = Letters.Select(s => tokenizer.Encode(s, 24)).ToArray();
        using var kl = OffTaskDistillation.KlToTeacher(student, teacher, batch);
        Assert.Equal(0f, kl.item<float>());
        kl.backward();
        var largest = student.Parameters.Max(p => p.grad is null ? 0 : p.grad.abs().max().item<float>());
        Assert.True(largest < 1e-6, $"gradient at the minimum: {largest}");
        using var other = LlamaModel.CreateRandom(Config, tokenizer, seed: 22, new ModelLoadOptions(RequiresGrad: false));
        using var positive = OffTaskDistillation.KlToTeacher(student, other, batch);
        Assert.True(positive.item<float>() > 0);
    }

    [Fact]
    public void Distilled_training_keeps_the_off_task_behaviour_near_the_teacher_and_is_deterministic()
    {
        var plain = Train(null);
        var distilled = Train(0.5);
        var again = Train(0.5);
        // Both learn the task; the distilled run stays much closer to the starting model on the off-task inputs.
        Assert.True(distilled.TaskLoss < plain.StartTaskLoss * 0.5, $"task loss {plain.StartTaskLoss} -> {distilled.TaskLoss}");
        Assert.True(distilled.OffTaskKl < 0.5 * plain.OffTaskKl, $"off-task KL to the start: distilled {distilled.OffTaskKl}, plain {plain.OffTaskKl}");
        Assert.Equal(distilled.Weights.Keys, again.Weights.Keys);
        foreach (var (name, values) in distilled.Weights)
        {
            Assert.True(values.SequenceEqual(again.Weights[name]), $"{name}: two distilled runs of one seed differ");
        }
    }

    [Fact]
    public void Invalid_distillation_settings_are_rejected_naming_the_setting()
    {
        var tokenizer = WordLevelTokenizer.CreateCharacterLevel();
        using var model = LlamaModel.CreateRandom(Config, tokenizer, seed: 31, new ModelLoadOptions(RequiresGrad: true));
        using var teacher = LlamaModel.CreateRandom(Config, tokenizer, seed: 31, new ModelLoadOptions(RequiresGrad: false));
        var trainer = new ZooTrainer();
        foreach (var (share, weight, pools, message) in new (double, double, IReadOnlyList<IReadOnlyList<TextSample>>, string)[]
        {
            (0, 1, [Letters], "share"),
            (1, 1, [Letters], "share"),
            (0.3, 0, [Letters], "weight"),
            (0.3, double.PositiveInfinity, [Letters], "weight"),
            (0.3, 1, [], "pool"),
            (0.3, 1, [Array.Empty<TextSample>()], "pool"),
        })
        {
            var error = Assert.Throws<ArgumentException>(() => trainer.Train(
                model, [Digits], Settings, 24, 1, "m", null, CancellationToken.None, null, new OffTaskDistillation(teacher, pools, share, weight)));
            Assert.Contains(message, error.Message, StringComparison.Ordinal);
        }
        var one = new OffTaskDistillation(teacher, [Letters], 0.01, 1);
        Assert.Equal(1, one.SamplesPerBatch(32));
        Assert.Equal(31, (one with { Share = 0.999 }).SamplesPerBatch(32));
        Assert.Equal(10, (one with { Share = 0.3 }).SamplesPerBatch(32));

        var tiny = ZooSettings.For(ZooSize.Tiny);
        Assert.Contains("expert_distillation", Assert.Throws<ArgumentException>((tiny with { ExpertDistillation = 1 }).Validate).Message, StringComparison.Ordinal);
        Assert.Contains("expert_distillation", Assert.Throws<ArgumentException>((tiny with { ExpertDistillation = -0.1 }).Validate).Message, StringComparison.Ordinal);
        Assert.Contains("expert_distillation_weight", Assert.Throws<ArgumentException>((tiny with { ExpertDistillation = 0.3, ExpertDistillationWeight = 0 }).Validate).Message, StringComparison.Ordinal);
        Assert.Equal(1.0, tiny.DistillationWeight);
    }

    [Fact]
    public void Distillation_keys_are_written_only_when_set_and_read_back_from_a_settings_file()
    {
        var tiny = ZooSettings.For(ZooSize.Tiny);
        var plainJson = System.Text.Json.JsonSerializer.Serialize(tiny, ZooManifest.JsonOptions);
        // Off by default and not written, so zoos built before the setting existed keep their fingerprint.
        Assert.DoesNotContain("distillation", plainJson, StringComparison.Ordinal);
        var path = Path.Combine(Path.GetTempPath(), $"zoo-settings-{Guid.NewGuid():N}.json");
        try
        {
            var distilled = tiny with { ExpertDistillation = 0.25, ExpertDistillationWeight = 2 };
            File.WriteAllText(path, System.Text.Json.JsonSerializer.Serialize(distilled, ZooManifest.JsonOptions));
            var text = File.ReadAllText(path);
            Assert.Contains("\"expert_distillation\": 0.25", text, StringComparison.Ordinal);
            Assert.Contains("\"expert_distillation_weight\": 2", text, StringComparison.Ordinal);
            var loaded = ZooSettings.Load(path);
            Assert.Equal(0.25, loaded.ExpertDistillation);
            Assert.Equal(2.0, loaded.DistillationWeight);
            Assert.NotEqual(ZooManifest.Fingerprint(tiny), ZooManifest.Fingerprint(loaded));
            // The base does not depend on how the experts are trained.
            Assert.Equal(ZooBuilder.BaseFingerprint(tiny), ZooBuilder.BaseFingerprint(loaded));
        }
        finally
        {
            File.Delete(path);
        }
    }

    private static (double StartTaskLoss, double TaskLoss, double OffTaskKl, Dictionary<string, float[]> Weights) Train(double? share)
    {
        var tokenizer = WordLevelTokenizer.CreateCharacterLevel();
        using var model = LlamaModel.CreateRandom(Config, tokenizer, seed: 41, new ModelLoadOptions(RequiresGrad: true));
        using var teacher = LlamaModel.CreateRandom(Config, tokenizer, seed: 41, new ModelLoadOptions(RequiresGrad: false));
        var taskBatch = Digits.Select(s => tokenizer.Encode(s, 24)).ToArray();
        var offBatch = Letters.Select(s => tokenizer.Encode(s, 24)).ToArray();
        double TaskLoss()
        {
            using var noGrad = no_grad();
            using var loss = model.LossBatch(taskBatch);
            return loss.item<float>();
        }
        var start = TaskLoss();
        var distillation = share is { } s ? new OffTaskDistillation(teacher, [Letters], s, 1.0) : null;
        new ZooTrainer().Train(model, [Digits], Settings with { Steps = 60 }, 24, 1, "m", null, CancellationToken.None, null, distillation);
        double offKl;
        using (no_grad())
        {
            using var kl = OffTaskDistillation.KlToTeacher(model, teacher, offBatch);
            offKl = kl.item<float>();
        }
        return (start, TaskLoss(), offKl, model.NamedWeights.ToDictionary(w => w.Name, w => w.Weight.data<float>().ToArray(), StringComparer.Ordinal));
    }

    /// <summary>The model's logits for one sample alone, <c>[T][V]</c> in double precision.</summary>
    private static double[][] LogitsAlone(LlamaModel model, TokenizedSample sample)
    {
        using var ids = tensor(sample.Ids, [1, sample.Length], ScalarType.Int64);
        using var logits = model.Forward(ids);
        using var flat = logits.reshape(sample.Length, -1).to(ScalarType.Float64);
        var values = flat.data<double>().ToArray();
        var vocabulary = values.Length / sample.Length;
        return [.. Enumerable.Range(0, sample.Length).Select(t => values.AsSpan(t * vocabulary, vocabulary).ToArray())];
    }

    private static double[] LogSoftmax(double[] logits)
    {
        var max = logits.Max();
        var logSum = max + Math.Log(logits.Sum(x => Math.Exp(x - max)));
        return [.. logits.Select(x => x - logSum)];
    }
}
