using SensMerging.Host.Serving.Web;
using SensMerging.Registry;

namespace SensMerging.Host.Tests.Serving.Web;

/// <summary>The lineage graph's layout (rows by generation, deterministic, no overlaps) and its SVG (links, arrows, encoding).</summary>
public sealed class LineageGraphTests
{
    private static readonly DateTime T0 = new(2026, 12, 1, 0, 0, 0, DateTimeKind.Utc);

    public static TheoryData<string> Shapes => ["chain", "fan-in with a cut", "diamond", "fan-out two deep", "same-row edge", "cut past the depth"];

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Boxes_sit_in_rows_by_generation_inside_the_picture_and_never_overlap(string shape)
    {
        var graph = Shape(shape);
        var layout = LineageLayout.Of(graph);

        Assert.Equal(graph.Nodes.Count, layout.Nodes.Count);
        Assert.Equal(graph.Cuts.Count, layout.Cuts.Count);
        var boxes = layout.Nodes.Select(p => (Name: p.Node.Merge.Id, p.X, p.Y, Generation: p.Node.Generation))
            .Concat(layout.Cuts.Select(c => (Name: "more" + c.Cut.Generation, c.X, c.Y, c.Cut.Generation))).ToList();
        foreach (var b in boxes)
        {
            Assert.InRange(b.X, 0, layout.Width - LineageLayout.NodeWidth);
            Assert.InRange(b.Y, 0, layout.Height - LineageLayout.NodeHeight);
        }
        for (var i = 0; i < boxes.Count; i++)
        {
            for (var j = i + 1; j < boxes.Count; j++)
            {
                var (a, b) = (boxes[i], boxes[j]);
                var apart = a.X + LineageLayout.NodeWidth <= b.X || b.X + LineageLayout.NodeWidth <= a.X
                    || a.Y + LineageLayout.NodeHeight <= b.Y || b.Y + LineageLayout.NodeHeight <= a.Y;
                Assert.True(apart, $"{shape}: {a.Name} at ({a.X},{a.Y}) overlaps {b.Name} at ({b.X},{b.Y})");
                // Same generation, same row; an older generation, a higher row.
                Assert.Equal(a.Generation.CompareTo(b.Generation), a.Y.CompareTo(b.Y));
            }
        }
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void The_same_graph_in_any_order_gets_the_same_positions(string shape)
    {
        var graph = Shape(shape);
        var shuffled = graph with
        {
            Nodes = [.. graph.Nodes.AsEnumerable().Reverse()],
            Edges = [.. graph.Edges.AsEnumerable().Reverse()],
            Cuts = [.. graph.Cuts.AsEnumerable().Reverse()],
        };
        static string[] Positions(LineageLayout l) =>
            [.. l.Nodes.Select(p => $"{p.Node.Merge.Id}@{p.X},{p.Y}").Concat(l.Cuts.Select(c => $"more{c.Cut.Generation}@{c.X},{c.Y}")).Order(StringComparer.Ordinal)];
        var first = LineageLayout.Of(graph);
        Assert.Equal(Positions(first), Positions(LineageLayout.Of(shuffled)));
        Assert.Equal(Positions(first), Positions(LineageLayout.Of(graph)));
        Assert.Equal((first.Width, first.Height), (LineageLayout.Of(shuffled).Width, LineageLayout.Of(shuffled).Height));
    }

    [Fact]
    public void A_chain_is_one_column_and_a_diamond_keeps_its_apex_centred_over_the_merge()
    {
        var chain = LineageLayout.Of(Shape("chain"));
        Assert.Single(chain.Nodes.Select(p => p.X).Distinct());
        Assert.Equal(5, chain.Nodes.Select(p => p.Y).Distinct().Count());
        Assert.Equal(LineageLayout.NodeWidth + (2 * LineageLayout.Margin), chain.Width);

        var diamond = LineageLayout.Of(Shape("diamond"));
        var x = diamond.Nodes.ToDictionary(p => p.Node.Merge.Id, p => p.CenterX);
        Assert.Equal(x["root"], x["a"]);
        Assert.Equal(x["root"] * 2, x["b"] + x["c"]);

        // Children sit under their own parent: p1's two children left of p2's.
        var fan = LineageLayout.Of(Shape("fan-out two deep"));
        var fx = fan.Nodes.ToDictionary(p => p.Node.Merge.Id, p => p.CenterX);
        foreach (var (left, right) in new[] { ("p1", "p2"), ("p2", "p3"), ("p1", "p3") })
        {
            var leftFirst = fx[left] < fx[right];
            Assert.Equal(leftFirst, Math.Max(fx[left + "c1"], fx[left + "c2"]) < Math.Min(fx[right + "c1"], fx[right + "c2"]));
            Assert.Equal(!leftFirst, Math.Max(fx[right + "c1"], fx[right + "c2"]) < Math.Min(fx[left + "c1"], fx[left + "c2"]));
        }
    }

    [Fact]
    public void The_svg_links_every_other_merge_highlights_this_one_draws_directed_edges_and_more_boxes()
    {
        var graph = Shape("fan-in with a cut");
        var html = new HtmlWriter();
        LineageGraphSvg.Write(html, "g", graph, LineageLayout.Of(graph));
        var svg = html.ToString();

        Assert.Equal(graph.Nodes.Count - 1, Count(svg, "<a class=\"node lineage-node\" href=\"/merges/"));
        Assert.Equal(1, Count(svg, "<g class=\"node current\" aria-current=\"page\" data-id=\"root\""));
        Assert.Equal(graph.Edges.Count, Count(svg, "<path class=\"edge\""));
        Assert.Equal(graph.Edges.Count, Count(svg, "marker-end=\"url(#lineage-arrow)\""));
        Assert.Contains("5 more merges</text>", svg, StringComparison.Ordinal);
        Assert.Contains("5 more merges that made its inputs not shown", svg, StringComparison.Ordinal);
        Assert.Contains("role=\"group\" viewBox=", svg, StringComparison.Ordinal);
    }

    [Fact]
    public void Hostile_names_methods_tags_and_references_in_a_node_are_harmless_text()
    {
        const string script = "<script>alert(1)</script>";
        var h = Merge("m-\"><script>alert(2)</script>", -1);
        var hostile = h with { Merge = h.Merge with { Method = script, Tags = [script], OutputRepoId = "x/\"onmouseover=\"alert(3)" } };
        var r = Merge("root", 0);
        var root = r with { Merge = r.Merge with { Method = script } };
        var graph = new LineageGraph(root.Merge, [root, hostile], [new LineageGraphEdge(hostile.Merge.Id, "root", script)], []);
        var html = new HtmlWriter();
        LineageGraphSvg.Write(html, "g", graph, LineageLayout.Of(graph));
        var svg = html.ToString();

        Assert.DoesNotContain("<script", svg, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("\"onmouseover", svg, StringComparison.Ordinal);
        // Only the graph's own elements: no tag came from a label.
        var tags = System.Text.RegularExpressions.Regex.Matches(svg, "<([a-zA-Z][a-zA-Z0-9]*)").Select(m => m.Groups[1].Value).ToHashSet(StringComparer.Ordinal);
        Assert.Subset(new HashSet<string>(StringComparer.Ordinal) { "figure", "svg", "defs", "marker", "path", "title", "g", "a", "rect", "text", "figcaption" }, tags);
        Assert.Contains("&lt;script&gt;alert(1)&lt;/script&gt;", svg, StringComparison.Ordinal);
        Assert.Contains("href=\"/merges/m-%22%3E%3Cscript%3Ealert%282%29%3C%2Fscript%3E\"", svg, StringComparison.Ordinal);
    }

    private static int Count(string text, string part) => text.Split(part).Length - 1;

    private static LineageGraphNode Merge(string id, int generation, int minutes = 0) =>
        new(new MergeSummary { Id = id, Method = "ties", Status = MergeStatus.Succeeded, CreatedAt = T0.AddMinutes(minutes) }, generation);

    /// <summary>Graphs of a few shapes, each rooted at "root".</summary>
    private static LineageGraph Shape(string shape)
    {
        var root = Merge("root", 0, 100);
        List<LineageGraphNode> nodes = [root];
        List<LineageGraphEdge> edges = [];
        List<LineageGraphCut> cuts = [];
        void Edge(string from, string to) => edges.Add(new LineageGraphEdge(from, to, null));
        switch (shape)
        {
            case "chain":
                nodes.AddRange([Merge("a", -2, 1), Merge("b", -1, 2), Merge("c", 1, 200), Merge("d", 2, 300)]);
                Edge("a", "b");
                Edge("b", "root");
                Edge("root", "c");
                Edge("c", "d");
                break;
            case "fan-in with a cut":
                for (var i = 0; i < 8; i++)
                {
                    nodes.Add(Merge("p" + i, -1, i));
                    Edge("p" + i, "root");
                }
                nodes.Add(Merge("c", 1, 200));
                Edge("root", "c");
                cuts.Add(new LineageGraphCut(-1, 5, false));
                break;
            case "diamond":
                nodes.AddRange([Merge("a", -2, 1), Merge("b", -1, 2), Merge("c", -1, 3)]);
                Edge("a", "b");
                Edge("a", "c");
                Edge("b", "root");
                Edge("c", "root");
                break;
            case "fan-out two deep":
                foreach (var p in new[] { "p1", "p2", "p3" })
                {
                    nodes.Add(Merge(p, 1, 200 + p[1]));
                    Edge("root", p);
                    foreach (var c in new[] { "c1", "c2" })
                    {
                        nodes.Add(Merge(p + c, 2, 300 + p[1] + c[1]));
                        Edge(p, p + c);
                    }
                }
                break;
            case "same-row edge":
                nodes.AddRange([Merge("b", -1, 1), Merge("c", -1, 2)]);
                Edge("b", "c");
                Edge("b", "root");
                Edge("c", "root");
                break;
            case "cut past the depth":
                nodes.AddRange([Merge("b", -1, 1), Merge("c", 1, 200)]);
                Edge("b", "root");
                Edge("root", "c");
                cuts.Add(new LineageGraphCut(-2, 3, true));
                cuts.Add(new LineageGraphCut(2, 1, false));
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(shape), shape, null);
        }
        return new LineageGraph(root.Merge, nodes, edges, cuts);
    }
}
