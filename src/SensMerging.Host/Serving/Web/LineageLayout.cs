using SensMerging.Registry;

namespace SensMerging.Host.Serving.Web;

/// <summary>
/// Places a lineage graph's merges on a grid: one row per generation (the oldest ancestors at the top, the merge
/// itself, then what was made from it), one box per merge, and a "more" box at the end of a row whose generation was
/// cut. Within a row, merges are ordered by the mean position of their already placed neighbours (fewer crossing
/// edges), then newest first and by id, so the same graph always gets the same picture whatever order it came in.
/// Rows are centred; boxes never overlap (one slot each).
/// </summary>
internal sealed class LineageLayout
{
    public const int NodeWidth = 210;
    public const int NodeHeight = 44;
    public const int GapX = 22;
    public const int GapY = 46;
    public const int Margin = 8;

    private LineageLayout(IReadOnlyList<Placed> nodes, IReadOnlyList<PlacedCut> cuts, int width, int height)
    {
        Nodes = nodes;
        Cuts = cuts;
        Width = width;
        Height = height;
    }

    /// <summary>Every merge's box, row by row (top first), left to right.</summary>
    public IReadOnlyList<Placed> Nodes { get; }

    /// <summary>The "more" boxes, one per cut generation.</summary>
    public IReadOnlyList<PlacedCut> Cuts { get; }

    public int Width { get; }

    public int Height { get; }

    /// <summary>A merge's box (top-left corner, <see cref="NodeWidth"/> × <see cref="NodeHeight"/>).</summary>
    public sealed record Placed(LineageGraphNode Node, int X, int Y)
    {
        public int CenterX => X + (NodeWidth / 2);
    }

    /// <summary>A cut generation's "more" box.</summary>
    public sealed record PlacedCut(LineageGraphCut Cut, int X, int Y);

    public static LineageLayout Of(LineageGraph graph)
    {
        ArgumentNullException.ThrowIfNull(graph);
        var generations = graph.Nodes.Select(n => n.Generation).Concat(graph.Cuts.Select(c => c.Generation)).Append(0).Distinct().Order().ToList();
        var first = generations[0];
        var rowCount = generations[^1] - first + 1;
        var byGeneration = graph.Nodes.GroupBy(n => n.Generation).ToDictionary(g => g.Key, g => g.ToList());
        var cutOf = graph.Cuts.GroupBy(c => c.Generation).ToDictionary(g => g.Key, g => g.First());
        int Slots(int generation) => (byGeneration.TryGetValue(generation, out var ns) ? ns.Count : 0) + (cutOf.ContainsKey(generation) ? 1 : 0);
        var columns = Math.Max(1, generations.Max(Slots));
        const int slot = NodeWidth + GapX;

        var neighbours = new Dictionary<string, List<string>>(StringComparer.Ordinal);
        foreach (var e in graph.Edges)
        {
            Neighbours(neighbours, e.From).Add(e.To);
            Neighbours(neighbours, e.To).Add(e.From);
        }

        // Place the merge's own row first, then outwards: ancestors upwards and descendants downwards, alternately.
        var centreX = new Dictionary<string, double>(StringComparer.Ordinal);
        var placed = new List<Placed>();
        var cuts = new List<PlacedCut>();
        foreach (var generation in generations.OrderBy(Math.Abs).ThenBy(g => g))
        {
            var row = byGeneration.TryGetValue(generation, out var ns) ? ns : [];
            var ordered = row
                .Select(n => (Node: n, Key: Barycentre(n.Merge.Id, neighbours, centreX)))
                .OrderBy(x => x.Key)
                .ThenByDescending(x => x.Node.Merge.CreatedAt)
                .ThenBy(x => x.Node.Merge.Id, StringComparer.Ordinal)
                .Select(x => x.Node)
                .ToList();
            var count = Slots(generation);
            var left = Margin + ((columns - count) * slot / 2);
            var y = Margin + ((generation - first) * (NodeHeight + GapY));
            for (var i = 0; i < ordered.Count; i++)
            {
                var p = new Placed(ordered[i], left + (i * slot), y);
                placed.Add(p);
                centreX[p.Node.Merge.Id] = p.CenterX;
            }
            if (cutOf.TryGetValue(generation, out var cut))
            {
                cuts.Add(new PlacedCut(cut, left + (ordered.Count * slot), y));
            }
        }
        var nodes = placed.OrderBy(p => p.Y).ThenBy(p => p.X).ToList();
        return new LineageLayout(nodes, [.. cuts.OrderBy(c => c.Y)], (2 * Margin) + (columns * slot) - GapX, (2 * Margin) + (rowCount * (NodeHeight + GapY)) - GapY);
    }

    private static List<string> Neighbours(Dictionary<string, List<string>> map, string id)
    {
        if (!map.TryGetValue(id, out var list))
        {
            list = [];
            map[id] = list;
        }
        return list;
    }

    /// <summary>The mean centre of the already placed neighbours; merges with none go last.</summary>
    private static double Barycentre(string id, Dictionary<string, List<string>> neighbours, Dictionary<string, double> centreX)
    {
        if (!neighbours.TryGetValue(id, out var list))
        {
            return double.MaxValue;
        }
        var xs = list.Where(centreX.ContainsKey).Select(n => centreX[n]).ToList();
        return xs.Count == 0 ? double.MaxValue : xs.Order().Average();
    }
}
