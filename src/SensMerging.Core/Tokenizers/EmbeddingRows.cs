using SensMerging.Core.Config;
using SensMerging.Core.Engine;
using SensMerging.Core.Models;
using SensMerging.Core.SafeTensors;

namespace SensMerging.Core.Tokenizers;

/// <summary>
/// The embedding and lm_head inputs of a merge whose models' vocabularies differ, as mergekit gives them to the merge
/// method. With an <see cref="OutputVocabulary"/> (mergekit's <c>PermutedEmbeddings</c>): every input becomes a
/// [padded vocabulary, hidden] tensor whose row for each output token is the model's own row of that token, or, where the
/// model lacks it (or a <c>tokens</c> entry forces it), the token's default row: a <c>tokens</c> entry's source, else
/// the only model that has the token, else the base's row when the base has it, else the mean of the rows of the models
/// that have it (zero when none has it); padding rows are the mean of the model's rows. Without one (mergekit's legacy
/// rule) inputs of different shapes are cut to their common sub-matrix. Both are computed row by row as the engine reads
/// the rows: nothing is held whole.
/// </summary>
internal static class EmbeddingRows
{
    private static readonly string[] EmbeddingNames =
        ["embed_tokens.weight", "lm_head.weight", "wte.weight", "word_embeddings.weight", "embed_out.weight", "tok_embeddings.weight"];

    /// <summary>True for a token embedding or output head (mergekit's <c>is_embed</c> weights) by its name.</summary>
    public static bool IsEmbedding(string name) =>
        EmbeddingNames.Any(e => name == e || name.EndsWith("." + e, StringComparison.Ordinal));

    /// <summary>
    /// The inputs to merge for tensor <paramref name="name"/> in place of <paramref name="tensors"/> (one per model, named by
    /// <paramref name="models"/>; the base, <paramref name="baseName"/>, among them when the merge has one), or null when they
    /// stay as they are. Problems are added to <paramref name="problems"/>; a legacy cut is described in <paramref name="note"/>.
    /// </summary>
    public static IReadOnlyList<ModelTensor>? Substitute(
        OutputVocabulary? vocabulary, SafeTensorsDType? castDType, string name, IReadOnlyList<ModelTensor> tensors, IReadOnlyList<string> models,
        string? baseName, List<string> problems, out string? note)
    {
        note = null;
        if (!IsEmbedding(name) || tensors.Any(t => t.Shape.Count != 2 || !t.DType.IsFloatingPoint))
        {
            return null;
        }
        if (vocabulary is not null)
        {
            var dtype = castDType ?? tensors.Select(t => t.DType).Aggregate(SafeTensorsDType.Promote);
            return Permute(vocabulary, dtype, name, tensors, models, baseName, problems);
        }
        if (tensors.All(t => t.Shape[0] == tensors[0].Shape[0] && t.Shape[1] == tensors[0].Shape[1]))
        {
            return null;
        }
        var rows = tensors.Min(t => t.Shape[0]);
        var columns = tensors.Min(t => t.Shape[1]);
        note = $"tensor '{name}' has shapes {string.Join(", ", tensors.Select((t, i) => $"[{t.Shape[0]}, {t.Shape[1]}] in '{models[i]}'"))}: merged on the common [{rows}, {columns}] sub-matrix, as mergekit does without a tokenizer_source (give tokenizer_source to keep every token)";
        return [.. tensors.Select(t => t.Shape[0] == rows && t.Shape[1] == columns ? t
            : t with { Shape = [rows, columns], ByteLength = rows * columns * t.DType.Size, Source = new SubMatrixSource(t, columns) })];
    }

    private static List<ModelTensor>? Permute(
        OutputVocabulary vocabulary, SafeTensorsDType dtype, string name, IReadOnlyList<ModelTensor> tensors, IReadOnlyList<string> models,
        string? baseName, List<string> problems)
    {
        var hidden = tensors[0].Shape[1];
        if (tensors.Any(t => t.Shape[1] != hidden))
        {
            problems.Add($"tensor '{name}' has embedding widths {string.Join(", ", tensors.Select((t, i) => $"{t.Shape[1]} in '{models[i]}'"))}: a vocabulary merge needs one width");
            return null;
        }
        var permutations = models.Select(vocabulary.PermutationOf).ToList();
        for (var m = 0; m < models.Count; m++)
        {
            var bad = permutations[m].FirstOrDefault(r => r >= tensors[m].Shape[0], -1);
            if (bad >= 0)
            {
                problems.Add($"tensor '{name}' of '{models[m]}' has {tensors[m].Shape[0]} rows, but its tokenizer and vocab_size give a token row {bad}");
                return null;
            }
        }
        var defaults = new Dictionary<int, float[]>();
        var reader = new RowReader(tensors, dtype);
        var tokens = vocabulary.TokensById;
        var count = tokens.Count;
        var baseIndex = baseName is null ? -1 : models.ToList().IndexOf(baseName);
        for (var id = 0; id < count; id++)
        {
            var token = tokens[id];
            if (vocabulary.Configured.TryGetValue(token, out var entry))
            {
                if (Configured(vocabulary, entry, name, token, id, models, permutations, reader, problems) is { } row)
                {
                    defaults[id] = row;
                }
                continue;
            }
            var having = Enumerable.Range(0, models.Count).Where(m => permutations[m][id] >= 0).ToList();
            if (having.Count == models.Count)
            {
                continue; // every model has its own row: no default is ever used
            }
            defaults[id] = having.Count switch
            {
                0 => new float[hidden],
                1 => reader.Row(having[0], permutations[having[0]][id]),
                _ when baseIndex >= 0 && permutations[baseIndex][id] >= 0 => reader.Row(baseIndex, permutations[baseIndex][id]),
                _ => Mean(reader, dtype, having.Select(m => (m, permutations[m][id]))),
            };
        }
        if (problems.Count > 0)
        {
            return null;
        }
        var result = new List<ModelTensor>(tensors.Count);
        for (var m = 0; m < tensors.Count; m++)
        {
            var plan = new int[count];
            for (var id = 0; id < count; id++)
            {
                var force = vocabulary.Configured.TryGetValue(tokens[id], out var entry) && entry.Force;
                plan[id] = permutations[m][id] >= 0 && !force ? permutations[m][id] : defaults.ContainsKey(id) ? -1 - id : int.MinValue;
            }
            var source = new PermutedRowsSource(tensors[m], dtype, plan, defaults, vocabulary.PaddedCount);
            result.Add(tensors[m] with
            {
                DType = dtype,
                Shape = [vocabulary.PaddedCount, hidden],
                ByteLength = vocabulary.PaddedCount * hidden * dtype.Size,
                Source = source,
            });
        }
        return result;
    }

    /// <summary>A <c>tokens</c> entry's row (mergekit's compute_default_embedding), or null with a problem.</summary>
    private static float[]? Configured(
        OutputVocabulary vocabulary, ResolvedTokenEmbedding entry, string name, string token, int id, IReadOnlyList<string> models,
        List<IReadOnlyList<int>> permutations, RowReader reader, List<string> problems)
    {
        switch (entry.Kind)
        {
            case TokenEmbeddingKind.Zero:
                return new float[reader.Hidden];
            case TokenEmbeddingKind.Model or TokenEmbeddingKind.ModelToken:
                var m = models.ToList().IndexOf(entry.Model!);
                if (m < 0)
                {
                    problems.Add($"token '{token}': its source model '{entry.Model}' is not among the inputs of tensor '{name}' ({string.Join(", ", models)})");
                    return null;
                }
                long row;
                if (entry.Kind == TokenEmbeddingKind.Model)
                {
                    row = permutations[m][id];
                    if (row < 0)
                    {
                        problems.Add($"token '{token}': its source model '{entry.Model}' does not have it (name another model, or use kind: model_token or kind: zero)");
                        return null;
                    }
                }
                else if (entry.Token is { } other)
                {
                    if (vocabulary.OriginalId(entry.Model!, other) is not { } otherId)
                    {
                        problems.Add($"token '{token}': source token '{other}' is not in the tokenizer of '{entry.Model}'");
                        return null;
                    }
                    row = otherId;
                }
                else
                {
                    row = entry.TokenId!.Value;
                }
                if (row < 0 || row >= reader.Rows(m))
                {
                    problems.Add($"token '{token}': source row {row} is out of range for '{entry.Model}' ({reader.Rows(m)} rows in '{name}')");
                    return null;
                }
                return reader.Row(m, row);
            default:
                problems.Add($"token '{token}': the tokens entry gives no source (name a model, or use kind: zero or kind: model_token)");
                return null;
        }
    }

    /// <summary>mergekit's average of a token's rows: summed in the dtype (each addition rounded to it), then divided.</summary>
    private static float[] Mean(RowReader reader, SafeTensorsDType dtype, IEnumerable<(int Model, int Row)> rows)
    {
        var sum = new float[reader.Hidden];
        var count = 0;
        foreach (var (model, row) in rows)
        {
            var values = reader.Row(model, row);
            for (var c = 0; c < sum.Length; c++)
            {
                sum[c] = ElementValues.Round(dtype, sum[c] + values[c]);
            }
            count++;
        }
        for (var c = 0; c < sum.Length; c++)
        {
            sum[c] = ElementValues.Round(dtype, sum[c] / count);
        }
        return sum;
    }

    /// <summary>Reads single rows of the inputs, cast to the merge's dtype.</summary>
    private sealed class RowReader(IReadOnlyList<ModelTensor> tensors, SafeTensorsDType dtype)
    {
        public int Hidden { get; } = (int)tensors[0].Shape[1];

        public long Rows(int model) => tensors[model].Shape[0];

        public float[] Row(int model, long row)
        {
            var tensor = tensors[model];
            var size = tensor.DType.Size;
            var bytes = new byte[Hidden * size];
            tensor.Source.ReadBytes(row * Hidden * size, bytes);
            var values = new float[Hidden];
            for (var c = 0; c < Hidden; c++)
            {
                values[c] = ElementValues.Round(dtype, (float)ElementValues.Read(tensor.DType, bytes.AsSpan(c * size, size)));
            }
            return values;
        }
    }
}

/// <summary>The first rows and columns of a 2-D tensor (mergekit's common sub-matrix), read row by row.</summary>
internal sealed class SubMatrixSource(ModelTensor original, long columns) : ITensorByteSource
{
    public void ReadBytes(long offsetInTensor, Span<byte> destination)
    {
        var size = original.DType.Size;
        var rowBytes = columns * size;
        var originalRowBytes = original.Shape[1] * size;
        var at = 0;
        while (at < destination.Length)
        {
            var position = offsetInTensor + at;
            var row = position / rowBytes;
            var within = position % rowBytes;
            var n = (int)Math.Min(rowBytes - within, destination.Length - at);
            original.Source.ReadBytes((row * originalRowBytes) + within, destination.Slice(at, n));
            at += n;
        }
    }
}

/// <summary>
/// A model's embedding rows in the output vocabulary's order: row i is the model's own row <c>plan[i]</c> (cast to the
/// merge's dtype), or the token's default row (<c>plan[i] = -1 - i</c>); rows from the vocabulary's size on (padding) are
/// the mean of the rows before them, computed once on first use.
/// </summary>
internal sealed class PermutedRowsSource(ModelTensor original, SafeTensorsDType dtype, int[] plan, IReadOnlyDictionary<int, float[]> defaults, int paddedCount)
    : ITensorByteSource
{
    private readonly Lock _gate = new();
    private readonly int _hidden = (int)original.Shape[1];
    private byte[]? _padding;

    public void ReadBytes(long offsetInTensor, Span<byte> destination)
    {
        var size = dtype.Size;
        var rowBytes = (long)_hidden * size;
        var row = new byte[rowBytes];
        var at = 0;
        while (at < destination.Length)
        {
            var position = offsetInTensor + at;
            var index = position / rowBytes;
            var within = (int)(position % rowBytes);
            var n = (int)Math.Min(rowBytes - within, destination.Length - at);
            if (index >= paddedCount)
            {
                throw new ArgumentOutOfRangeException(nameof(offsetInTensor), $"row {index} is beyond the {paddedCount} rows of '{original.Name}'");
            }
            Row(index, row);
            row.AsSpan(within, n).CopyTo(destination.Slice(at, n));
            at += n;
        }
    }

    private void Row(long index, Span<byte> row)
    {
        var size = dtype.Size;
        if (index >= plan.Length)
        {
            Padding().CopyTo(row);
            return;
        }
        var source = plan[index];
        if (source >= 0)
        {
            var originalSize = original.DType.Size;
            if (original.DType == dtype)
            {
                original.Source.ReadBytes((long)source * _hidden * size, row);
                return;
            }
            var raw = new byte[_hidden * originalSize];
            original.Source.ReadBytes((long)source * _hidden * originalSize, raw);
            for (var c = 0; c < _hidden; c++)
            {
                ElementValues.Write(dtype, row.Slice(c * size, size), ElementValues.Read(original.DType, raw.AsSpan(c * originalSize, originalSize)));
            }
            return;
        }
        // int.MinValue: no row at all (cannot happen with a complete default set); mergekit leaves such a row zero.
        var values = source == int.MinValue ? new float[_hidden] : defaults[-1 - source];
        for (var c = 0; c < _hidden; c++)
        {
            ElementValues.Write(dtype, row.Slice(c * size, size), values[c]);
        }
    }

    /// <summary>The padding row: the mean over the vocabulary's rows (mergekit's <c>torch.mean</c>: accumulated wide, rounded once).</summary>
    private byte[] Padding()
    {
        lock (_gate)
        {
            if (_padding is not null)
            {
                return _padding;
            }
            var size = dtype.Size;
            var sum = new double[_hidden];
            var row = new byte[_hidden * size];
            for (var i = 0; i < plan.Length; i++)
            {
                Row(i, row);
                for (var c = 0; c < _hidden; c++)
                {
                    sum[c] += ElementValues.Read(dtype, row.AsSpan(c * size, size));
                }
            }
            var padding = new byte[_hidden * size];
            for (var c = 0; c < _hidden; c++)
            {
                ElementValues.Write(dtype, padding.AsSpan(c * size, size), sum[c] / plan.Length);
            }
            _padding = padding;
            return padding;
        }
    }
}
