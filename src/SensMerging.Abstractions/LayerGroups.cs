using System.Globalization;

namespace SensMerging.Abstractions;

/// <summary>
/// The layer groups Sens-Merging scores and scales: one per transformer block (<c>model.layers.N</c>), one each for
/// the embeddings (<c>model.embed_tokens</c>), the final norm (<c>model.norm</c>) and <c>lm_head</c>. Any other
/// tensor belongs to the group named by its name up to the last dot-separated component.
/// </summary>
public static class LayerGroups
{
    /// <summary>The embeddings' group, <c>model.embed_tokens</c>.</summary>
    public const string Embeddings = "model.embed_tokens";
    /// <summary>The final norm's group, <c>model.norm</c>.</summary>
    public const string FinalNorm = "model.norm";
    /// <summary>The output head's group, <c>lm_head</c>.</summary>
    public const string LmHead = "lm_head";

    /// <summary>The layer group of a tensor name.</summary>
    public static string Of(string tensorName)
    {
        ArgumentNullException.ThrowIfNull(tensorName);
        var layer = BlockIndex(tensorName);
        if (layer >= 0)
        {
            return "model.layers." + layer.ToString(CultureInfo.InvariantCulture);
        }
        if (tensorName.StartsWith(Embeddings, StringComparison.Ordinal))
        {
            return Embeddings;
        }
        if (tensorName.StartsWith(FinalNorm, StringComparison.Ordinal))
        {
            return FinalNorm;
        }
        if (tensorName.StartsWith(LmHead, StringComparison.Ordinal))
        {
            return LmHead;
        }
        var dot = tensorName.LastIndexOf('.');
        return dot > 0 ? tensorName[..dot] : tensorName;
    }

    /// <summary>The transformer block index in a name like <c>model.layers.12.mlp.up_proj.weight</c>, or -1.</summary>
    public static int BlockIndex(string tensorName)
    {
        ArgumentNullException.ThrowIfNull(tensorName);
        const string marker = "layers.";
        var at = tensorName.IndexOf(marker, StringComparison.Ordinal);
        if (at < 0)
        {
            return -1;
        }
        var start = at + marker.Length;
        var end = start;
        while (end < tensorName.Length && char.IsAsciiDigit(tensorName[end]))
        {
            end++;
        }
        return end > start && (end == tensorName.Length || tensorName[end] == '.')
            ? int.Parse(tensorName.AsSpan(start, end - start), NumberStyles.None, CultureInfo.InvariantCulture)
            : -1;
    }

    /// <summary>
    /// The distinct layer groups of <paramref name="tensorNames"/> in model order: embeddings, blocks by index, final norm,
    /// head, then any other group by ordinal name (<see cref="SortKey"/>). The one ordering of a model's layer-group
    /// columns, so the host's groups and a scorer's agree.
    /// </summary>
    public static string[] InModelOrder(IEnumerable<string> tensorNames)
    {
        ArgumentNullException.ThrowIfNull(tensorNames);
        return [.. tensorNames.Select(Of).Distinct(StringComparer.Ordinal)
            .OrderBy(g => SortKey(g).Rank).ThenBy(g => SortKey(g).Index).ThenBy(g => g, StringComparer.Ordinal)];
    }

    /// <summary>Sort key that orders groups as they appear in a model: embeddings, blocks by index, norm, head.</summary>
    public static (int Rank, int Index, string Name) SortKey(string group)
    {
        ArgumentNullException.ThrowIfNull(group);
        var block = BlockIndex(group);
        return group switch
        {
            Embeddings => (0, 0, group),
            _ when block >= 0 => (1, block, group),
            FinalNorm => (2, 0, group),
            LmHead => (3, 0, group),
            _ => (4, 0, group),
        };
    }
}
