using System.Net;
using System.Text.Json;

namespace SensMerging.Host.Tests.Serving.Web;

/// <summary>
/// <c>/api/registry/...</c> on serve's port answers with exactly what <c>sensmerge registry ... --json</c> prints for the
/// same filters: one query layer for the CLI, the pages and the API.
/// </summary>
[Collection(BrowserCollection.Name)]
public sealed class RegistryApiTests
{
    private readonly HubSiteFixture _site;

    public RegistryApiTests(HubSiteFixture site) => _site = site;

    [Theory]
    [InlineData("", new string[0])]
    [InlineData("?strategy=ties", new[] { "--strategy", "ties" })]
    [InlineData("?status=failed", new[] { "--status", "failed" })]
    [InlineData("?decorator=sens", new[] { "--decorator", "sens" })]
    [InlineData("?q=zoo%2Fcode&sort=oldest", new[] { "--search", "zoo/code", "--sort", "oldest" })]
    [InlineData("?sort=score&score=math%2Fexact_match&offset=1&limit=1", new[] { "--sort", "score", "--score", "math/exact_match", "--offset", "1", "--limit", "1" })]
    public async Task The_list_API_answers_as_registry_list_json_with_the_same_filters(string query, string[] cliArgs)
    {
        using var http = new HttpClient { BaseAddress = new Uri(_site.Endpoint) };
        var api = await http.GetStringAsync("/api/registry/merges" + query);
        var (exit, stdout, stderr) = await _site.SensMergeAsync(["registry", "list", "--json", .. cliArgs]);
        Assert.True(exit == 0, stderr);
        Assert.Equal(Normalize(stdout), Normalize(api));
        Assert.NotEqual(JsonValueKind.Undefined, JsonDocument.Parse(api).RootElement.ValueKind);
    }

    [Fact]
    public async Task Show_lineage_and_diff_answer_as_the_CLI_and_errors_are_4xx_JSON()
    {
        using var http = new HttpClient { BaseAddress = new Uri(_site.Endpoint) };
        await Same($"/api/registry/merges/{_site.SensId}", "registry", "show", _site.SensId, "--json");
        var output = Path.Combine(_site.Root, "out", "sens");
        await Same("/api/registry/lineage?model=" + Uri.EscapeDataString(output), "registry", "lineage", output, "--json");
        await Same($"/api/registry/diff?left={_site.SensId}&right={_site.TiesId}", "registry", "diff", _site.SensId, _site.TiesId, "--json");

        var missing = await http.GetAsync("/api/registry/merges/m-nope");
        Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
        Assert.Contains("m-nope", JsonDocument.Parse(await missing.Content.ReadAsStringAsync()).RootElement.GetProperty("error").GetString(), StringComparison.Ordinal);
        var bad = await http.GetAsync("/api/registry/merges?status=exploded");
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        var page = await http.GetAsync("/merges/m-nope");
        Assert.Equal(HttpStatusCode.NotFound, page.StatusCode);
        Assert.Contains("text/html", page.Content.Headers.ContentType?.ToString(), StringComparison.Ordinal);

        async Task Same(string path, params string[] cli)
        {
            var api = await http.GetStringAsync(path);
            var (exit, stdout, stderr) = await _site.SensMergeAsync(cli);
            Assert.True(exit == 0, stderr);
            Assert.Equal(Normalize(stdout), Normalize(api));
        }
    }

    [Fact]
    public async Task The_lineage_graph_API_answers_the_model_pages_bounded_query()
    {
        using var http = new HttpClient { BaseAddress = new Uri(_site.Endpoint) };
        var graph = JsonDocument.Parse(await http.GetStringAsync($"/api/registry/merges/{_site.TiesId}/lineage?depth=2&width=4")).RootElement;
        Assert.Equal(_site.TiesId, graph.GetProperty("root").GetProperty("id").GetString());
        Assert.Contains(graph.GetProperty("nodes").EnumerateArray(), n => n.GetProperty("merge").GetProperty("id").GetString() == _site.SensId && n.GetProperty("generation").GetInt32() == -1);
        var edge = Assert.Single(graph.GetProperty("edges").EnumerateArray());
        Assert.Equal((_site.SensId, _site.TiesId), (edge.GetProperty("from").GetString(), edge.GetProperty("to").GetString()));
        Assert.Equal(Path.Combine(_site.Root, "out", "sens"), edge.GetProperty("input").GetString());

        Assert.Equal(HttpStatusCode.BadRequest, (await http.GetAsync($"/api/registry/merges/{_site.TiesId}/lineage?depth=0")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await http.GetAsync("/api/registry/merges/m-nope/lineage")).StatusCode);
    }

    [Fact]
    public async Task Pages_forbid_scripts_and_report_their_server_time()
    {
        using var http = new HttpClient { BaseAddress = new Uri(_site.Endpoint) };
        var response = await http.GetAsync("/");
        response.EnsureSuccessStatusCode();
        Assert.Contains("default-src 'none'", response.Headers.GetValues("Content-Security-Policy").Single(), StringComparison.Ordinal);
        Assert.StartsWith("app;dur=", response.Headers.GetValues("Server-Timing").Single(), StringComparison.Ordinal);
        // The Hub API keeps working beside the pages.
        var models = JsonDocument.Parse(await http.GetStringAsync("/api/models")).RootElement;
        Assert.Contains(models.EnumerateArray(), m => m.GetProperty("id").GetString() == "merges/" + _site.SensId);
    }

    private static string Normalize(string json) => JsonSerializer.Serialize(JsonDocument.Parse(json).RootElement);
}
