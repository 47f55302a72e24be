using System.Diagnostics;
using System.Globalization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Logging;
using SensMerging.Host.Cli;
using SensMerging.Host.Plugins;
using SensMerging.Hub.Server;
using SensMerging.Registry;

namespace SensMerging.Host.Serving.Web;

/// <summary>
/// The registry as a browsable model hub on <c>serve</c>'s port: server-rendered pages (models, model, compare,
/// plugins) and the JSON API under <c>/api/registry</c>. Both read the registry through <see cref="IMergeRegistry"/>,
/// the same queries as <c>sensmerge registry</c>, and answer in the same JSON. Read-only.
/// </summary>
public sealed partial class RegistryWebUi
{
    private const string HtmlType = "text/html; charset=utf-8";
    private const string JsonType = "application/json; charset=utf-8";

    /// <summary>
    /// The pages run no script and load nothing from elsewhere; inline styles are not allowed either (the model card's
    /// sanitised HTML cannot restyle the page).
    /// </summary>
    private const string ContentSecurityPolicy =
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

    private readonly IMergeRegistry _registry;
    private readonly PluginCatalog _plugins;
    private readonly ILogger<RegistryWebUi> _logger;

    public RegistryWebUi(IMergeRegistry registry, PluginCatalog plugins, ILogger<RegistryWebUi> logger)
    {
        _registry = registry;
        _plugins = plugins;
        _logger = logger;
    }

    /// <summary>
    /// Maps the pages and the API. <paramref name="hub"/> is everything served (resolve URLs, repository pages);
    /// <paramref name="folders"/> the <c>--repos</c> folders listed on the models page (null when none).
    /// </summary>
    public void Map(IEndpointRouteBuilder endpoints, IHubRepositorySource hub, IHubRepositorySource? folders)
    {
        ArgumentNullException.ThrowIfNull(endpoints);
        ArgumentNullException.ThrowIfNull(hub);
        var pages = new RegistryPages(_registry, _plugins, hub, folders);
        // The card renderer's first use builds Markdig's pipeline and the HTML sanitizer's parser (0.4-1.6 s measured),
        // and the lineage graph's code runs for the first time: done here in the background, so no page view pays for it.
        _ = Task.Run(ModelCardRenderer.WarmUp);
        _ = Task.Run(LineageGraphSvg.WarmUp);
        endpoints.MapGet("/api/registry/merges", (HttpContext c) => ApiAsync(c, async (h, ct) =>
            RegistryJson.Serialize(await _registry.ListAsync(ListRequest.Parse(h.Request.Query).Query, ct))));
        endpoints.MapGet("/api/registry/merges/{id}", (HttpContext c, string id) => ApiAsync(c, async (_, ct) =>
            RegistryJson.Serialize(await GetAsync(id, ct))));
        endpoints.MapGet("/api/registry/lineage", (HttpContext c) => ApiAsync(c, async (h, ct) =>
            RegistryJson.Serialize(await _registry.LineageAsync(Required(h, "model"), ct))));
        endpoints.MapGet("/api/registry/merges/{id}/lineage", (HttpContext c, string id) => ApiAsync(c, async (h, ct) =>
            RegistryJson.Serialize(await _registry.LineageGraphAsync((await GetAsync(id, ct)).Id, LineageBoundsOf(h), ct))));
        endpoints.MapGet("/api/registry/diff", (HttpContext c) => ApiAsync(c, async (h, ct) =>
            RegistryJson.Serialize(MergeDiff.Compare(await GetAsync(Required(h, "left"), ct), await GetAsync(Required(h, "right"), ct)))));
        endpoints.MapGet("/api/registry/plugins", (HttpContext c) => ApiAsync(c, PluginsJsonAsync));

        endpoints.MapGet("/", (HttpContext c) => PageAsync(c, pages.ModelsAsync));
        endpoints.MapGet("/compare", (HttpContext c) => PageAsync(c, pages.CompareAsync));
        endpoints.MapGet("/plugins", (HttpContext c) => PageAsync(c, pages.PluginsAsync));
        endpoints.MapGet("/{org}/{name}", (HttpContext c, string org, string name) => PageAsync(c, (h, ct) => pages.ModelAsync(h, org, name, ct)));
        endpoints.MapGet("/assets/{file}", Asset);
    }

    private Task<string> PluginsJsonAsync(HttpContext context, CancellationToken cancellationToken) =>
        Task.FromResult(System.Text.Json.JsonSerializer.Serialize(PluginsCommand.ToJson(_plugins), JsonOutput.Options));

    private async Task<MergeRecord> GetAsync(string id, CancellationToken ct) =>
        await _registry.GetAsync(id, ct) ?? throw new MergeNotFoundException(id);

    /// <summary>The <c>depth</c> and <c>width</c> query parameters (defaults 4 and 8; 1-16 and 1-64).</summary>
    private static LineageBounds LineageBoundsOf(HttpContext context)
    {
        static int Read(HttpContext c, string name, int fallback, int max) =>
            c.Request.Query[name].ToString() is { Length: > 0 } v
                ? int.TryParse(v, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var n) && n >= 1 && n <= max
                    ? n
                    : throw new FormatException($"the query parameter '{name}' must be a whole number from 1 to {max}")
                : fallback;
        var defaults = new LineageBounds();
        return new LineageBounds { Depth = Read(context, "depth", defaults.Depth, 16), Width = Read(context, "width", defaults.Width, 64) };
    }

    private static string Required(HttpContext context, string name) =>
        context.Request.Query[name].ToString() is { Length: > 0 } v ? v : throw new FormatException($"the query parameter '{name}' is required");

    private async Task ApiAsync(HttpContext context, Func<HttpContext, CancellationToken, Task<string>> body)
    {
        var clock = Stopwatch.StartNew();
        int status;
        string json;
        try
        {
            json = await body(context, context.RequestAborted);
            status = StatusCodes.Status200OK;
        }
        catch (Exception ex) when (Classify(ex) is { } code)
        {
            status = code;
            json = System.Text.Json.JsonSerializer.Serialize(new Dictionary<string, string> { ["error"] = ex.Message });
        }
        context.Response.StatusCode = status;
        context.Response.ContentType = JsonType;
        context.Response.Headers["X-Content-Type-Options"] = "nosniff";
        context.Response.Headers["Server-Timing"] = Timing(clock);
        LogServed(_logger, context.Request.Path + context.Request.QueryString, status, clock.Elapsed.TotalMilliseconds);
        await context.Response.WriteAsync(json, context.RequestAborted);
    }

    private async Task PageAsync(HttpContext context, Func<HttpContext, CancellationToken, Task<PageResult>> render)
    {
        var clock = Stopwatch.StartNew();
        PageResult page;
        try
        {
            page = await render(context, context.RequestAborted);
        }
        catch (Exception ex) when (Classify(ex) is { } code)
        {
            page = RegistryPages.Error(code, ex.Message);
        }
        context.Response.StatusCode = page.Status;
        context.Response.ContentType = HtmlType;
        context.Response.Headers["Content-Security-Policy"] = ContentSecurityPolicy;
        context.Response.Headers["X-Content-Type-Options"] = "nosniff";
        context.Response.Headers["Referrer-Policy"] = "no-referrer";
        context.Response.Headers["Server-Timing"] = Timing(clock);
        LogServed(_logger, context.Request.Path + context.Request.QueryString, page.Status, clock.Elapsed.TotalMilliseconds);
        await context.Response.WriteAsync(page.Html, context.RequestAborted);
    }

    /// <summary>The HTTP status for errors the user caused (bad filter, unknown id); null lets others surface as 500.</summary>
    private static int? Classify(Exception ex) => ex switch
    {
        FormatException or ArgumentException or AmbiguousMergeIdException => StatusCodes.Status400BadRequest,
        MergeNotFoundException or KeyNotFoundException => StatusCodes.Status404NotFound,
        _ => null,
    };

    /// <summary>The server's own time for the response (rendering and registry queries), for the benchmark and browsers' dev tools.</summary>
    private static string Timing(Stopwatch clock) =>
        "app;dur=" + clock.Elapsed.TotalMilliseconds.ToString("0.###", CultureInfo.InvariantCulture);

    private static IResult Asset(string file)
    {
        var type = Path.GetExtension(file) switch
        {
            ".css" => "text/css; charset=utf-8",
            ".svg" => "image/svg+xml",
            _ => null,
        };
        var stream = type is null ? null : typeof(RegistryWebUi).Assembly.GetManifestResourceStream("SensMerging.Web." + file);
        return stream is null ? Results.NotFound() : Results.Stream(stream, type);
    }

    /// <summary>The names of the embedded assets (for tests).</summary>
    internal static IEnumerable<string> AssetNames() =>
        typeof(RegistryWebUi).Assembly.GetManifestResourceNames().Where(n => n.StartsWith("SensMerging.Web.", StringComparison.Ordinal));

    [LoggerMessage(EventId = 4100, Level = LogLevel.Debug, Message = "web: {Path} -> {Status} in {Milliseconds:0.0} ms")]
    private static partial void LogServed(ILogger logger, string path, int status, double milliseconds);
}

/// <summary>A rendered page and its status.</summary>
internal sealed record PageResult(int Status, string Html);
