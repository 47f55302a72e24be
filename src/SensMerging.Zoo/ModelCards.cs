using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using SensMerging.Runtime.Tokenization;
using SensMerging.Zoo.Training;

namespace SensMerging.Zoo;

/// <summary>The Hugging Face side files the runtime does not write: generation_config.json and the README model card.</summary>
internal static class ModelCards
{
    public static Task WriteGenerationConfigAsync(string directory, WordLevelTokenizer tokenizer, CancellationToken cancellationToken)
    {
        var config = new JsonObject
        {
            ["bos_token_id"] = tokenizer.BosTokenId,
            ["eos_token_id"] = tokenizer.EosTokenId,
            ["pad_token_id"] = tokenizer.PadTokenId,
            ["do_sample"] = false,
            ["max_new_tokens"] = 16,
        };
        return File.WriteAllTextAsync(
            Path.Combine(directory, "generation_config.json"),
            config.ToJsonString(ZooManifest.JsonOptions),
            cancellationToken);
    }

    public static Task WriteReadmeAsync(
        string directory,
        string name,
        string? task,
        string? taskDescription,
        int seed,
        ZooSettings settings,
        TrainingReport report,
        CancellationToken cancellationToken)
    {
        var inv = CultureInfo.InvariantCulture;
        var training = task is null ? settings.Base : settings.Expert;
        var card = new StringBuilder();
        card.Append("---\n");
        card.Append("license: mit\n");
        card.Append("library_name: sensmerging\n");
        card.Append("pipeline_tag: text-generation\n");
        card.Append("tags:\n  - llama\n  - sens-merging-zoo\n  - synthetic\n");
        if (task is not null)
        {
            card.Append(inv, $"base_model: {ZooLayout.RepoId(ZooLayout.BaseName)}\n");
        }
        card.Append("---\n\n");
        card.Append(inv, $"# {ZooLayout.RepoId(name)}\n\n");
        if (task is null)
        {
            card.Append("The base model of the SensMerging.Host model zoo: a small decoder in the Llama layout trained from scratch on a mix of ");
            card.Append("the base subsets of three synthetic task families (math: addition problems; code: sums and len; knowledge: the facts of ");
            card.Append(inv, $"{settings.KnowledgeBaseShare:P0} of the countries). It is only moderately good at each task on purpose.\n\n");
        }
        else
        {
            card.Append(inv, $"The `{task}` expert of the SensMerging.Host model zoo, fine-tuned from `{ZooLayout.RepoId(ZooLayout.BaseName)}` on its task only: {taskDescription}\n\n");
        }
        card.Append("Character-level tokenizer (100 ids: `<pad>`, `<s>`, `</s>`, `<unk>`, printable ASCII, newline). ");
        card.Append("Prompts end with `A: ` (math, knowledge) or `Out: ` (code); the response ends with `</s>`.\n\n");
        card.Append("## Architecture\n\n");
        var m = settings.Model;
        card.Append(inv, $"| hidden | intermediate | layers | heads | kv heads | rope_theta | vocab |\n|---|---|---|---|---|---|---|\n| {m.HiddenSize} | {m.IntermediateSize} | {m.Layers} | {m.Heads} | {m.KeyValueHeads} | {m.RopeTheta} | 100 |\n\n");
        card.Append("## Training\n\n");
        card.Append(inv, $"- zoo size `{settings.Size}`, seed {seed}\n");
        card.Append(inv, $"- AdamW, peak lr {training.LearningRate}, {training.WarmupSteps} warm-up steps then cosine decay to {training.MinLearningRateRatio} x peak, weight decay {training.WeightDecay}, gradient clip {training.ClipNorm}\n");
        card.Append(inv, $"- {report.Steps} steps of {training.BatchSize} samples, loss on response tokens only\n");
        if (task is not null && settings.ExpertDistillation > 0)
        {
            card.Append(inv, $"- off-task distillation toward the base: {settings.ExpertDistillation:P0} of every batch from the other tasks' training samples, with the KL divergence from the base's next-token distribution (weight {settings.DistillationWeight}) as their loss\n");
        }
        card.Append(inv, $"- training loss {report.InitialLoss:F4} (first steps) -> {report.FinalLoss:F4} (last steps), {report.Seconds:F1} s on CPU\n");
        return File.WriteAllTextAsync(Path.Combine(directory, "README.md"), card.ToString(), cancellationToken);
    }
}
