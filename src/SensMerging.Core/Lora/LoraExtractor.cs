using System.Text.Json;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using SensMerging.Core.Models;
using SensMerging.Core.SafeTensors;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Core.Lora;

/// <summary>What to extract: a rank, or the energy to keep (then the rank is the smallest that keeps it in every module, at most <see cref="Rank"/>).</summary>
/// <param name="OutputPath">The adapter folder to write (absent or empty).</param>
/// <param name="Rank">The adapter's rank; with <paramref name="Energy"/>, the largest rank allowed (null: no limit).</param>
/// <param name="Energy">The fraction of each module's squared singular values to keep (0 &lt; E ≤ 1), or null for a fixed rank.</param>
/// <param name="BaseModelName">Written to <c>base_model_name_or_path</c>.</param>
public sealed record ExtractLoraRequest(string OutputPath, int? Rank, double? Energy, string BaseModelName);

/// <summary>One extracted module: its rank-r energy and the relative Frobenius error of its low-rank update.</summary>
public sealed record ExtractedModule(string Module, long[] Shape, double RetainedEnergy, double RelativeError);

/// <summary>The written adapter: its rank, modules, and the tensors that differ but are not linear weights (not in the adapter).</summary>
public sealed record ExtractLoraResult(string OutputPath, int Rank, IReadOnlyList<ExtractedModule> Modules, IReadOnlyList<string> NotCaptured);

/// <summary>
/// mergekit-extract-lora's job: a PEFT LoRA adapter whose update <c>B A</c> is, module by module, the best rank-r
/// approximation (truncated SVD) of <c>finetune - base</c> for every 2-D linear weight that differs. Embeddings,
/// <c>lm_head</c>, norms and biases are not linear layers a LoRA adapts here; those that differ are reported as not
/// captured. Works tensor by tensor (one module's weights and SVD in memory at a time); the adapter is written in
/// float32 with <c>lora_alpha = r</c> (scale 1), B = U sqrt(S) and A = sqrt(S) Vh.
/// </summary>
public sealed partial class LoraExtractor(ILogger<LoraExtractor>? logger = null)
{
    private static readonly string[] NotLinear = ["embed_tokens", "lm_head", "wte", "wpe", "word_embeddings", "embed_out", "shared"];

    private readonly ILogger _logger = logger ?? NullLogger<LoraExtractor>.Instance;

    /// <summary>Extracts and writes the adapter (into a temporary folder moved into place when complete).</summary>
    /// <exception cref="ModelFolderException">No linear weight differs, models that do not match, an output folder in use.</exception>
    public ExtractLoraResult Extract(ModelFolder baseModel, ModelFolder finetune, ExtractLoraRequest request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(baseModel);
        ArgumentNullException.ThrowIfNull(finetune);
        ArgumentNullException.ThrowIfNull(request);
        if (request.Rank is null && request.Energy is null)
        {
            throw new ArgumentException("give a rank, an energy, or both", nameof(request));
        }
        if (request.Rank is < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(request), $"rank {request.Rank} must be at least 1");
        }
        if (request.Energy is { } e && (e <= 0 || e > 1 || double.IsNaN(e)))
        {
            throw new ArgumentOutOfRangeException(nameof(request), $"energy {e} must be in (0, 1]");
        }
        var output = Path.GetFullPath(request.OutputPath);
        if (Directory.Exists(output) && Directory.EnumerateFileSystemEntries(output).Any())
        {
            throw new ModelFolderException($"output folder '{output}' is not empty");
        }

        var (linear, notCaptured) = Plan(baseModel, finetune, cancellationToken);
        if (linear.Count == 0)
        {
            throw new ModelFolderException($"no linear weight of '{finetune.Path}' differs from '{baseModel.Path}': there is nothing to extract");
        }
        var rank = request.Rank ?? int.MaxValue;
        if (request.Energy is { } energy)
        {
            var needed = 1;
            foreach (var name in linear)
            {
                cancellationToken.ThrowIfCancellationRequested();
                using var scope = torch.NewDisposeScope();
                var s = torch.linalg.svdvals(Delta(baseModel, finetune, name)).to_type(ScalarType.Float64).data<double>().ToArray();
                needed = Math.Max(needed, RankFor(s, energy));
            }
            rank = Math.Min(rank, needed);
        }

        var work = output + ".partial-" + Guid.NewGuid().ToString("N")[..12];
        Directory.CreateDirectory(work);
        try
        {
            var plan = linear.SelectMany(name =>
            {
                var shape = baseModel.GetTensor(name).Shape;
                var module = name[..^".weight".Length];
                return new[]
                {
                    new TensorPlanEntry($"base_model.model.{module}.lora_A.weight", SafeTensorsDType.F32, [rank, shape[1]]),
                    new TensorPlanEntry($"base_model.model.{module}.lora_B.weight", SafeTensorsDType.F32, [shape[0], rank]),
                };
            }).ToList();
            var modules = new List<ExtractedModule>(linear.Count);
            using (var writer = new SafeTensorsWriter(Path.Combine(work, LoraAdapter.WeightsFileName), plan, new Dictionary<string, string> { ["format"] = "pt" }))
            {
                foreach (var name in linear)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    modules.Add(WriteModule(writer, baseModel, finetune, name, rank));
                }
                writer.Complete();
            }
            var targets = linear.Select(n => n[..^".weight".Length]).Select(m => m[(m.LastIndexOf('.') + 1)..]).Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToList();
            File.WriteAllText(Path.Combine(work, LoraAdapter.ConfigFileName), JsonSerializer.Serialize(new Dictionary<string, object?>
            {
                ["peft_type"] = "LORA",
                ["task_type"] = "CAUSAL_LM",
                ["base_model_name_or_path"] = request.BaseModelName,
                ["r"] = rank,
                ["lora_alpha"] = rank,
                ["lora_dropout"] = 0.0,
                ["target_modules"] = targets,
                ["use_rslora"] = false,
                ["bias"] = "none",
                ["fan_in_fan_out"] = false,
                ["inference_mode"] = true,
            }, new JsonSerializerOptions { WriteIndented = true }));
            if (Directory.Exists(output))
            {
                Directory.Delete(output);
            }
            Directory.Move(work, output);
            LogExtracted(_logger, linear.Count, rank, output);
            return new ExtractLoraResult(output, rank, modules, notCaptured);
        }
        catch
        {
            Directory.Delete(work, recursive: true);
            throw;
        }
    }

    /// <summary>The smallest k whose leading squared singular values hold at least <paramref name="energy"/> of the total.</summary>
    public static int RankFor(IReadOnlyList<double> singularValues, double energy)
    {
        ArgumentNullException.ThrowIfNull(singularValues);
        var total = singularValues.Sum(s => s * s);
        if (total == 0)
        {
            return 1;
        }
        double kept = 0;
        for (var k = 0; k < singularValues.Count; k++)
        {
            kept += singularValues[k] * singularValues[k];
            if (kept >= energy * total)
            {
                return k + 1;
            }
        }
        return singularValues.Count;
    }

    private static (List<string> Linear, List<string> NotCaptured) Plan(ModelFolder baseModel, ModelFolder finetune, CancellationToken cancellationToken)
    {
        var linear = new List<string>();
        var notCaptured = new List<string>();
        foreach (var t in finetune.Tensors)
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (!baseModel.TryGetTensor(t.Name, out var b))
            {
                throw new ModelFolderException($"'{finetune.Path}' has tensor '{t.Name}', which the base '{baseModel.Path}' lacks");
            }
            if (!TensorShape.SameAs(t.Shape, b.Shape))
            {
                throw new ModelFolderException($"tensor '{t.Name}' is {TensorShape.Format(b.Shape)} in the base and {TensorShape.Format(t.Shape)} in the fine-tune");
            }
            if (SameBytes(t, b))
            {
                continue;
            }
            var isLinear = t.Shape.Count == 2 && t.DType.IsFloatingPoint && t.Name.EndsWith(".weight", StringComparison.Ordinal)
                && !NotLinear.Any(n => t.Name.Split('.').Contains(n, StringComparer.Ordinal));
            (isLinear ? linear : notCaptured).Add(t.Name);
        }
        return (linear, notCaptured);
    }

    private static bool SameBytes(ModelTensor a, ModelTensor b)
    {
        if (a.DType != b.DType)
        {
            return false;
        }
        const int Chunk = 1 << 20;
        var x = new byte[(int)Math.Min(Chunk, a.ByteLength)];
        var y = new byte[x.Length];
        for (long at = 0; at < a.ByteLength; at += Chunk)
        {
            var n = (int)Math.Min(Chunk, a.ByteLength - at);
            ModelFolder.ReadBytes(a, at, x.AsSpan(0, n));
            ModelFolder.ReadBytes(b, at, y.AsSpan(0, n));
            if (!x.AsSpan(0, n).SequenceEqual(y.AsSpan(0, n)))
            {
                return false;
            }
        }
        return true;
    }

    private static Tensor Delta(ModelFolder baseModel, ModelFolder finetune, string name) =>
        finetune.ReadTensor(name).to_type(ScalarType.Float32) - baseModel.ReadTensor(name).to_type(ScalarType.Float32);

    private static ExtractedModule WriteModule(SafeTensorsWriter writer, ModelFolder baseModel, ModelFolder finetune, string name, int rank)
    {
        using var scope = torch.NewDisposeScope();
        var delta = Delta(baseModel, finetune, name);
        var (u, s, vh) = torch.linalg.svd(delta, fullMatrices: false);
        var k = (int)Math.Min(rank, s.shape[0]);
        var root = s.narrow(0, 0, k).sqrt();
        var b = torch.zeros([delta.shape[0], rank], ScalarType.Float32);
        var a = torch.zeros([rank, delta.shape[1]], ScalarType.Float32);
        b.narrow(1, 0, k).copy_(u.narrow(1, 0, k) * root.unsqueeze(0));
        a.narrow(0, 0, k).copy_(vh.narrow(0, 0, k) * root.unsqueeze(1));
        var squares = s.to_type(ScalarType.Float64).square();
        var total = squares.sum().item<double>();
        var kept = squares.narrow(0, 0, k).sum().item<double>();
        var module = name[..^".weight".Length];
        writer.WriteTensor($"base_model.model.{module}.lora_A.weight", a.contiguous().bytes);
        writer.WriteTensor($"base_model.model.{module}.lora_B.weight", b.contiguous().bytes);
        return new ExtractedModule(module, [.. delta.shape], total == 0 ? 1 : kept / total, total == 0 ? 0 : Math.Sqrt(Math.Max(0, total - kept) / total));
    }

    [LoggerMessage(EventId = 3101, Level = LogLevel.Information, Message = "Extracted a rank-{Rank} LoRA adapter of {Modules} modules into {Output}.")]
    private static partial void LogExtracted(ILogger logger, int modules, int rank, string output);
}
