/* GStreamer captcha plugin: registers the captchaocr element.
 *
 * SPDX-License-Identifier: MIT
 */
#include "captcha-build-config.h"

/* GST_PLUGIN_DEFINE reads PACKAGE (the source package of the plugin). */
#ifndef PACKAGE
#define PACKAGE "gst-captcha"
#endif

#include <gst/gst.h>

#include "gstcaptchaocr.h"

static gboolean
plugin_init (GstPlugin * plugin)
{
  return GST_ELEMENT_REGISTER (captchaocr, plugin);
}

GST_PLUGIN_DEFINE (GST_VERSION_MAJOR,
    GST_VERSION_MINOR,
    captcha,
    "Reads captchas (short distorted text images) with a residual CNN",
    plugin_init, CAPTCHA_VERSION, "MIT/X11", "gst-captcha",
    "https://example.invalid/gst-captcha")
