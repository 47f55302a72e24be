using System.Net;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Http.Resilience;
using Polly;

namespace SensMerging.Hub.Client;

/// <summary>Registers the Hub client and cache.</summary>
public static class HubServiceCollectionExtensions
{
    /// <summary>
    /// Adds <see cref="HubOptions"/> (from the environment, then <paramref name="configure"/>), the typed
    /// <see cref="HubClient"/> (no automatic redirects, retries with exponential backoff on connection errors, attempt
    /// timeouts, 5xx, 408 and 429 only, logged header values redacted) and <see cref="HubCache"/>.
    /// </summary>
    public static IServiceCollection AddHubClient(this IServiceCollection services, Action<HubOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        services.TryAddSingleton(_ =>
        {
            var options = HubOptions.FromEnvironment();
            configure?.Invoke(options);
            return options;
        });
        return AddCore(services);
    }

    /// <summary>Same as <see cref="AddHubClient(IServiceCollection, Action{HubOptions}?)"/> with explicit options.</summary>
    public static IServiceCollection AddHubClient(this IServiceCollection services, HubOptions options)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(options);
        services.TryAddSingleton(options);
        return AddCore(services);
    }

    private static IServiceCollection AddCore(IServiceCollection services)
    {
        var http = services.AddHttpClient<HubClient>(http => http.Timeout = Timeout.InfiniteTimeSpan)
            .ConfigurePrimaryHttpMessageHandler(HubHttpHandler)
            .RedactLoggedHeaders(static _ => true);
        http.AddResilienceHandler("hub", static (builder, context) =>
        {
            var options = context.ServiceProvider.GetRequiredService<HubOptions>();
            if (options.MaxRetryAttempts > 0)
            {
                builder.AddRetry(new HttpRetryStrategyOptions
                {
                    MaxRetryAttempts = options.MaxRetryAttempts,
                    Delay = options.RetryBaseDelay,
                    BackoffType = DelayBackoffType.Exponential,
                    UseJitter = true,
                    ShouldHandle = static args => ValueTask.FromResult(IsTransient(args.Outcome)),
                });
            }
        });

        // Added after the resilience handler, so it runs inside the retry strategy: every attempt gets its own timeout
        // (HF_HUB_ETAG_TIMEOUT / HF_HUB_DOWNLOAD_TIMEOUT).
        http.AddHttpMessageHandler(static sp => new HubAttemptTimeoutHandler(sp.GetRequiredService<HubOptions>()));
        services.TryAddTransient<HubCache>();

        // Uploads: no automatic retries (a request body is a file stream, and a push is resumed by running it again,
        // which sends only what the Hub lacks), no attempt timeout (an upload takes as long as its bytes take).
        services.AddHttpClient<HubUploader>(http => http.Timeout = Timeout.InfiniteTimeSpan)
            .ConfigurePrimaryHttpMessageHandler(HubHttpHandler)
            .RedactLoggedHeaders(static _ => true);
        return services;
    }

    /// <summary>The connection both Hub clients use: no automatic redirects or decompression (bytes are hashed as sent), pooled connections renewed every 5 min, 30 s to connect.</summary>
    private static SocketsHttpHandler HubHttpHandler() => new()
    {
        AllowAutoRedirect = false,
        AutomaticDecompression = DecompressionMethods.None,
        PooledConnectionLifetime = TimeSpan.FromMinutes(5),
        ConnectTimeout = TimeSpan.FromSeconds(30),
    };

    private static bool IsTransient(Outcome<HttpResponseMessage> outcome)
    {
        if (outcome.Exception is not null)
        {
            return outcome.Exception is HttpRequestException or HubAttemptTimeoutException;
        }

        var status = (int)(outcome.Result?.StatusCode ?? 0);
        return status is >= 500 or 408 or 429;
    }
}
