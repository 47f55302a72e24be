using SensMerging.Abstractions;
using SensMerging.Core.Models;
using SensMerging.Core.SafeTensors;
using SensMerging.Core.Tokenizers;

namespace SensMerging.Core.Engine;

/// <summary>
/// What the engine merges, planned once before anything is written: the jobs (one per output tensor), the tensors the
/// inputs have and the reference lacks, and the number of transformer blocks the jobs' depths are measured against.
/// </summary>
/// <param name="Jobs">One job per output tensor.</param>
/// <param name="ExtraTensors">Tensors inputs have and the reference lacks.</param>
/// <param name="LayerCount">Transformer blocks of the output.</param>
/// <param name="Notes">What the plan did that a user should hear of (embeddings cut to their common sub-matrix).</param>
internal sealed record TensorPlan(IReadOnlyList<MergeJob> Jobs, IReadOnlyList<MergeDataWarning> ExtraTensors, int LayerCount, IReadOnlyList<string> Notes);

/// <summary>
/// Turns a <see cref="MergePlan"/> and the input files into <see cref="MergeJob"/>s: the plan-level checks (model counts,
/// base, dtypes, options, destination), then either every tensor of the reference model under its own name in every
/// input, or each output tensor of a <see cref="MergePlan.Layout"/> from its own sources. Every job is built by one
/// factory, so the cast, output and compute dtypes follow one rule. All problems found are reported together in one
/// <see cref="MergeValidationException"/>.
/// </summary>
internal static class TensorPlanner
{
    /// <summary>Problems listed in one exception at most (planning stops collecting beyond that).</summary>
    public const int MaxListedProblems = 20;

    public static TensorPlan Plan(MergePlan plan, MergeOptions options)
    {
        CheckPlan(plan, options);
        if (plan.Layout is { } layout)
        {
            var layoutNotes = new List<string>();
            var layoutJobs = FromLayout(plan, layout, layoutNotes);
            return new TensorPlan(layoutJobs, [], layoutJobs.Count == 0 ? 0 : layoutJobs.Max(j => j.LayerIndex) + 1, layoutNotes);
        }
        var notes = new List<string>();
        var (jobs, extra) = ByName(plan, options.Strict, notes);
        return new TensorPlan(jobs, extra, (plan.Base ?? plan.Models[0]).Folder.LayerCount, notes);
    }

    /// <summary>Throws one <see cref="MergeValidationException"/> listing <paramref name="problems"/>, when there are any.</summary>
    public static void ThrowIfAny(List<string> problems)
    {
        if (problems.Count == 0)
        {
            return;
        }
        var shown = problems.Take(MaxListedProblems).ToList();
        var more = problems.Count > shown.Count ? $"\n  ... and {problems.Count - shown.Count} more" : string.Empty;
        var message = problems.Count == 1
            ? problems[0]
            : $"{problems.Count} problems:\n  " + string.Join("\n  ", shown) + more;
        throw new MergeValidationException(message) { Problems = problems };
    }

    private static void CheckPlan(MergePlan plan, MergeOptions options)
    {
        var problems = new List<string>();
        var strategy = plan.Strategy ?? throw new MergeValidationException("the plan has no strategy");
        var traits = strategy.Traits;
        if (plan.Models is null || plan.Models.Count == 0)
        {
            throw new MergeValidationException("the plan has no models to merge");
        }
        if (plan.Layout is null)
        {
            problems.AddRange(traits.CountProblems(strategy.Name, plan.Base is not null, plan.Models.Count));
        }
        else if (plan.Base is not null)
        {
            problems.Add("a plan with a tensor layout names each tensor's sources; it has no separate base model");
        }
        if (plan.Layout is null && plan.Weights is { } w && w.Count != plan.Models.Count)
        {
            problems.Add($"{w.Count} weights given for {plan.Models.Count} models");
        }
        if (plan.OutputDType is { IsFloatingPoint: false } od)
        {
            problems.Add($"output dtype {od} is not a floating-point type (use float32, float16 or bfloat16)");
        }
        if (plan.CastDType is { IsFloatingPoint: false } cd)
        {
            problems.Add($"dtype {cd} is not a floating-point type (use float32, float16 or bfloat16)");
        }
        if (options.BlockElements < 1)
        {
            problems.Add($"block size {options.BlockElements} must be at least 1 element");
        }
        if (options.WholeTensorWorkerElements < 1)
        {
            problems.Add($"whole-tensor worker buffer size {options.WholeTensorWorkerElements} must be at least 1 element");
        }
        if (options.ShardSizeBytes < 1)
        {
            problems.Add($"shard size {options.ShardSizeBytes} must be at least 1 byte");
        }
        if (options.TokenizerSource is { } tok && !Directory.Exists(tok))
        {
            problems.Add($"tokenizer source folder '{tok}' does not exist");
        }
        try
        {
            MergedModelWriter.CheckDestination(options.OutputPath, options.Overwrite);
        }
        catch (ModelFolderException ex)
        {
            problems.Add(ex.Message);
        }
        foreach (var dup in plan.Models.GroupBy(m => m.Name, StringComparer.Ordinal).Where(g => g.Count() > 1))
        {
            problems.Add($"model name '{dup.Key}' is used twice");
        }
        ThrowIfAny(problems);
    }

    /// <summary>
    /// Every tensor of the reference model (the base, else the first model) under its own name in every input; per input,
    /// the tensors the reference lacks (not merged: a warning, or with <paramref name="strict"/> a <see cref="MergeDataException"/>).
    /// </summary>
    private static (List<MergeJob> Jobs, IReadOnlyList<MergeDataWarning> ExtraTensors) ByName(MergePlan plan, bool strict, List<string> notes)
    {
        var problems = new List<string>();
        var inputs = (plan.Base is null ? plan.Models : [plan.Base, .. plan.Models]).ToList();
        var inputNames = inputs.Select(i => i.Name).ToList();
        var reference = inputs[0];
        var configured = plan.Weights ?? [.. Enumerable.Repeat(1.0, plan.Models.Count)];
        var jobs = new List<MergeJob>(reference.Folder.Tensors.Count);
        foreach (var t in reference.Folder.Tensors)
        {
            var tensors = new List<ModelTensor>(inputs.Count) { t };
            var mixed = false;
            var embedding = EmbeddingRows.IsEmbedding(t.Name) && t.Shape.Count == 2;
            foreach (var other in inputs.Skip(1))
            {
                if (!other.Folder.TryGetTensor(t.Name, out var o))
                {
                    problems.Add($"tensor '{t.Name}' of '{reference.Name}' is missing from model '{other.Name}'");
                    continue;
                }
                if (!TensorShape.SameAs(o.Shape, t.Shape) && !(embedding && o.Shape.Count == 2))
                {
                    problems.Add($"tensor '{t.Name}' has shape {TensorShape.Format(t.Shape)} in '{reference.Name}' but {TensorShape.Format(o.Shape)} in '{other.Name}'");
                }
                else if (!Castable(o.DType, t.DType))
                {
                    problems.Add($"tensor '{t.Name}' has dtype {t.DType} in '{reference.Name}' but {o.DType} in '{other.Name}'");
                    mixed = true;
                }
                tensors.Add(o);
            }
            if (problems.Count >= MaxListedProblems)
            {
                break;
            }
            if (tensors.Count != inputs.Count || mixed)
            {
                continue;
            }
            if (embedding)
            {
                if (EmbeddingInputs(plan, t.Name, tensors, inputNames, plan.Base?.Name, problems, notes) is not { } rows)
                {
                    continue;
                }
                tensors = rows;
            }
            var weights = configured;
            if (plan.WeightOverride is { } hook)
            {
                weights = hook(t.Name, configured);
                if (weights.Count != plan.Models.Count)
                {
                    problems.Add($"weight override for tensor '{t.Name}' returned {weights.Count} weights for {plan.Models.Count} models");
                }
            }
            ResolvedParameters parameters;
            try
            {
                parameters = plan.ParameterResolver?.Invoke(t.Name, plan.Models.Count) ?? ResolvedParameters.Empty;
            }
            catch (Exception ex) when (ex is ArgumentException or FormatException or InvalidOperationException or KeyNotFoundException)
            {
                problems.Add($"parameters for tensor '{t.Name}': {ex.Message}");
                continue;
            }
            jobs.Add(Job(plan, jobs.Count, t.Name, tensors, plan.Base is not null, parameters, weights, inputNames, problems));
        }
        ThrowIfAny(problems);
        var extra = new List<MergeDataWarning>();
        foreach (var other in inputs.Skip(1))
        {
            var lacking = other.Folder.Tensors.Where(t => !reference.Folder.TryGetTensor(t.Name, out _)).Select(t => t.Name).ToList();
            if (lacking.Count > 0)
            {
                extra.Add(MergeDataWarning.Extra(other.Name, reference.Name, lacking));
            }
        }
        if (strict && extra.Count > 0)
        {
            throw new MergeDataException(extra);
        }
        return (jobs, extra);
    }

    /// <summary>
    /// The jobs of a <see cref="MergePlan.Layout"/>: each output tensor from its own base and sources (found under their names
    /// in their models, of one shape, floating-point dtypes cast as in the usual layout), with the strategy's model counts
    /// and base checked per tensor.
    /// </summary>
    private static List<MergeJob> FromLayout(MergePlan plan, IReadOnlyList<PlannedTensor> layout, List<string> notes)
    {
        var traits = plan.Strategy.Traits;
        var problems = new List<string>();
        var jobs = new List<MergeJob>(layout.Count);
        foreach (var planned in layout)
        {
            if (problems.Count >= MaxListedProblems)
            {
                break;
            }
            if (planned.Sources.Count == 0)
            {
                problems.Add($"output tensor '{planned.Name}' has no sources");
                continue;
            }
            if (traits.CountProblems(plan.Strategy.Name, planned.Base is not null, planned.Sources.Count) is { Count: > 0 } counts)
            {
                problems.AddRange(counts.Select(p => $"output tensor '{planned.Name}': {p}"));
                continue;
            }
            if (planned.Weights.Count != planned.Sources.Count)
            {
                problems.Add($"tensor '{planned.Name}' has {planned.Weights.Count} weights for {planned.Sources.Count} sources");
                continue;
            }
            var tensors = new List<ModelTensor>(planned.Sources.Count + 1);
            IReadOnlyList<PlannedSource> sources = planned.Base is { } baseSource ? [baseSource, .. planned.Sources] : planned.Sources;
            var embedding = EmbeddingRows.IsEmbedding(planned.Name);
            foreach (var source in sources)
            {
                if (!source.Model.Folder.TryGetTensor(source.TensorName, out var t))
                {
                    problems.Add($"tensor '{source.TensorName}' (for output tensor '{planned.Name}') is missing from model '{source.Model.Name}'");
                    continue;
                }
                if (tensors.Count > 0 && !TensorShape.SameAs(t.Shape, tensors[0].Shape) && !(embedding && t.Shape.Count == 2 && tensors[0].Shape.Count == 2))
                {
                    problems.Add($"output tensor '{planned.Name}' has sources of shapes {TensorShape.Format(tensors[0].Shape)} and {TensorShape.Format(t.Shape)} ('{source.Model.Name}')");
                    continue;
                }
                if (tensors.Count > 0 && !Castable(t.DType, tensors[0].DType))
                {
                    problems.Add($"output tensor '{planned.Name}' has sources of dtypes {tensors[0].DType} and {t.DType} ('{source.Model.Name}')");
                    continue;
                }
                tensors.Add(t);
            }
            if (tensors.Count != sources.Count)
            {
                continue;
            }
            List<string> names = [.. sources.Select(x => x.Model.Name)];
            if (embedding)
            {
                if (EmbeddingInputs(plan, planned.Name, tensors, names, planned.Base?.Model.Name, problems, notes) is not { } rows)
                {
                    continue;
                }
                tensors = rows;
            }
            var job = Job(plan, jobs.Count, planned.Name, tensors, planned.Base is not null, planned.Parameters, planned.Weights, names, problems);
            List<string> ownGroups = [.. planned.Sources.Select(x => LayerGroups.Of(x.TensorName))];
            jobs.Add(ownGroups.All(g => g == job.LayerGroup) ? job : job with { ModelLayerGroups = ownGroups });
        }
        ThrowIfAny(problems);
        return jobs;
    }

    /// <summary>Floating-point inputs of different dtypes are cast (mergekit's rule); anything else must match exactly.</summary>
    private static bool Castable(SafeTensorsDType a, SafeTensorsDType b) => a == b || (a.IsFloatingPoint && b.IsFloatingPoint);

    /// <summary>
    /// An embedding or head tensor's inputs with their rows arranged for the output vocabulary (<see cref="EmbeddingRows"/>;
    /// its note, if any, added to <paramref name="notes"/>), or null when they cannot be merged (the reason added to
    /// <paramref name="problems"/>). The one place both planners (by name and by slice layout) take this step.
    /// </summary>
    private static List<ModelTensor>? EmbeddingInputs(
        MergePlan plan, string name, List<ModelTensor> tensors, IReadOnlyList<string> models, string? baseName, List<string> problems, List<string> notes)
    {
        var substituted = EmbeddingRows.Substitute(plan.Vocabulary, plan.CastDType, name, tensors, models, baseName, problems, out var note);
        if (substituted is null && problems.Count > 0)
        {
            return null;
        }
        var rows = substituted?.ToList() ?? tensors;
        if (note is not null)
        {
            notes.Add(note);
        }
        if (rows.Any(x => !TensorShape.SameAs(x.Shape, rows[0].Shape)))
        {
            problems.Add($"tensor '{rows[0].Name}' has shapes {string.Join(", ", rows.Select(x => TensorShape.Format(x.Shape)))} in its inputs, which cannot be merged");
            return null;
        }
        return rows;
    }

    /// <summary>
    /// One job: a floating-point tensor is merged, cast to the plan's dtype (else the promotion of its inputs' dtypes),
    /// computed in <see cref="MergeJob.ComputeFor"/> and written in <see cref="MergeJob.OutputFor"/>; any other tensor is
    /// copied from the reference as stored.
    /// </summary>
    private static MergeJob Job(
        MergePlan plan, int index, string name, List<ModelTensor> tensors, bool hasBase, ResolvedParameters parameters,
        IReadOnlyList<double> weights, IReadOnlyList<string> inputNames, List<string> problems)
    {
        var first = tensors[0];
        var merged = first.DType.IsFloatingPoint;
        if (merged && first.DType.ScalarType is null)
        {
            problems.Add($"tensor '{first.Name}' has dtype {first.DType}, which TorchSharp cannot compute with");
        }
        var cast = merged ? plan.CastDType ?? tensors.Select(x => x.DType).Aggregate(SafeTensorsDType.Promote) : first.DType;
        return new MergeJob(
            index, name, [.. first.Shape], first.DType, cast, merged ? MergeJob.OutputFor(plan, cast) : first.DType, tensors, hasBase,
            merged, parameters, weights, LayerGroups.Of(name), LayerGroups.BlockIndex(name), inputNames)
        {
            ComputeDType = merged ? MergeJob.ComputeFor(plan, cast) : SafeTensorsDType.F32,
        };
    }
}
